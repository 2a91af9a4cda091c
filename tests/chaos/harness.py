"""The service under a fault, as deployed: gunicorn (the Dockerfile's web server) and the
Procfile's worker and beat, all pointed at the Redis and the PostgreSQL the test chose (private
ones it may stop), with a pipeline that records what each committed batch saw."""

import subprocess
import sys
from pathlib import Path

from tests.chaos.figures import Cursor
from tests.events import stages
from tests.processes import ROOT, CeleryWorker, WebServer, celery_environment

#: Resolve identities, then record the batch (``tests.events.stages.record_in_table``).
RECORDING_PIPELINE = "identity.services.identity_resolve_events,tests.events.stages.record_in_table"


def redis_environment(redis_url: str) -> dict[str, str]:
    """Every use of Redis on one server: the broker and the rate limits' counters."""
    return {"CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url, "RATE_LIMIT_REDIS_URL": redis_url}


class Service:
    """The web server and the Celery worker and beat of one deployment under test."""

    def __init__(
        self, *, redis_url: str, database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        database = database_url.rsplit("/", 1)[1]
        extra = {
            **redis_environment(redis_url),
            "DATABASE_URL": database_url,
            # A request gives up on an unreachable PostgreSQL after this and answers 503.
            "DATABASE_CONNECT_TIMEOUT": "2",
            "EVENT_PIPELINE_STAGES": RECORDING_PIPELINE,
            "EVENT_PIPELINE_BATCH_SIZE": "25",
            **(extra_env or {}),
        }
        self.env = celery_environment(
            broker_url=redis_url, database=database, workdir=workdir, extra_env=extra
        )
        self.web = WebServer(env=self.env, workdir=workdir)
        self.celery = CeleryWorker(broker_url=redis_url, database=database, workdir=workdir, extra_env=extra)

    def manage(self, *args: str) -> str:
        """Run a management command with the service's settings; its last line of output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return (done.stdout.strip().splitlines() or [""])[-1]

    def start(self) -> None:
        self.web.start()
        self.celery.start()

    def stop(self) -> None:
        self.celery.stop()
        self.web.stop()

    def output(self) -> str:
        return f"--- worker\n{self.celery.output()[-6000:]}\n--- web\n{self.web.output()[-3000:]}"


def create_seen_table(cursor: Cursor) -> None:
    """The table ``record_in_table`` writes to (``cursor``: Django's or psycopg's)."""
    cursor.execute(f"DROP TABLE IF EXISTS {stages.SEEN_TABLE}")
    cursor.execute(f"CREATE TABLE {stages.SEEN_TABLE} (event_id bigint NOT NULL)")
