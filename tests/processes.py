"""Real processes for integration tests: a private Redis and a private PostgreSQL the test
may stop and restart, the test process's own publishing pointed at such a Redis, the Celery
worker and beat started exactly as the ``Procfile`` starts them (prefork, same options)
against the test database, and the web server as the Dockerfile runs it."""

import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import redis

from config.celery import app

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


class RedisServer:
    """A throw-away redis-server on a free port, so a test can take the broker away."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for(self.is_up, timeout=10):
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, *, crash: bool = False) -> None:
        """Shut down (SIGTERM: clients see their connections closed), or ``crash`` (SIGKILL:
        nothing is said to the clients, as when the host or its network goes away)."""
        if self.process is not None:
            if crash:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def is_up(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False


def _publish_to(*, variable: str | None, setting: str | None, eager: bool) -> None:
    # Celery reads the CELERY_BROKER_URL variable before its own setting (``broker_url``).
    if variable is None:
        os.environ.pop("CELERY_BROKER_URL", None)
    else:
        os.environ["CELERY_BROKER_URL"] = variable
    app.conf.broker_url, app.conf.task_always_eager = setting, eager
    # Forget the connection pool made for the broker before (what ``app.close()`` does, without
    # taking the app out of Celery's active apps: a module of shared tasks imported after that,
    # as autodiscovery imports members.privacy.tasks, would register its tasks with no app)...
    app._pool = None
    # ... and the producer pool, which an earlier publish (an eager run too) made on it, as
    # Celery's own after-fork clean-up does.
    app.amqp._producer_pool = None


@contextlib.contextmanager
def publishing_to(url: str, *, eager: bool = False) -> Iterator[None]:
    """Inside the block this process publishes its Celery tasks to ``url`` (for real unless
    ``eager``); after it, where and how it did before."""
    variable = os.environ.get("CELERY_BROKER_URL")
    setting = app.conf.get("broker_url")  # as set (the attribute reads the variable first)
    was_eager = app.conf.task_always_eager
    _publish_to(variable=url, setting=url, eager=eager)
    try:
        yield
    finally:
        _publish_to(variable=variable, setting=setting, eager=was_eager)


def procfile_celery_arguments(process: str) -> list[str]:
    """The ``celery`` arguments the ``Procfile`` starts ``process`` with (whatever wraps the
    command, such as the restart loop), so that tests run the worker as deployed."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            words = shlex.split(command)
            start = next(i for i, word in enumerate(words) if word.endswith("bin/celery"))
            return words[start + 1 :]
    raise LookupError(f"no {process!r} process in the Procfile")


def celery_environment(
    *, broker_url: str, database: str, workdir: Path, extra_env: dict[str, str]
) -> dict[str, str]:
    """The environment of a Celery process under test: the test settings against
    ``database``, tasks for real (not eager), a sweep every second."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "EVENT_SWEEP_INTERVAL_SECONDS": "1",
        "TMPDIR": str(workdir),  # where kombu dumps messages it could not restore
        **extra_env,
    }


class CeleryProcess:
    """``celery <Procfile arguments>`` in a subprocess, with the test settings against
    ``database``; ``overrides`` replace the value of an option (a path, say), ``arguments`` are
    added (a pool's ``-Q`` and node name)."""

    def __init__(
        self,
        process: str,
        *,
        broker_url: str,
        database: str,
        workdir: Path,
        extra_env: dict[str, str],
        overrides: dict[str, str] | None = None,
        arguments: list[str] | None = None,
        log_name: str | None = None,
    ) -> None:
        self.log_path = workdir / f"{log_name or process}.log"
        self.env = celery_environment(
            broker_url=broker_url, database=database, workdir=workdir, extra_env=extra_env
        )
        procfile_arguments = procfile_celery_arguments(process)
        for option, value in (overrides or {}).items():
            procfile_arguments[procfile_arguments.index(option) + 1] = value
        self.command = [sys.executable, "-m", "celery", *procfile_arguments, *(arguments or [])]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            self.process = None
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


class PostgresServer:
    """A throw-away PostgreSQL cluster (``initdb`` in a temporary directory, a free port, trust
    auth on 127.0.0.1), so a test can take the database away without touching the shared one.

    PostgreSQL refuses to run as root: as root the cluster belongs to, and runs as, the
    ``postgres`` user (``runuser``). ``available()`` says whether this machine can do it."""

    BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
    OS_USER = "postgres"

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cdp-private-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"

    @classmethod
    def available(cls) -> str | None:
        """None when a private cluster can be made here, else why not."""
        if not (cls.BIN / "initdb").exists():
            return f"no PostgreSQL binaries in {cls.BIN} (set PG_BIN)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(cls.OS_USER)
            except KeyError:
                return f"running as root and there is no {cls.OS_USER!r} user to run PostgreSQL as"
            if shutil.which("runuser") is None:
                return "running as root without runuser"
        return None

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        as_user = ["runuser", "-u", self.OS_USER, "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}{self.log()}")

    def init(self) -> None:
        self._own_root()
        self._run(
            str(self.BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth", "trust",
            "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync",
        )  # fmt: skip

    def replicate(self, primary: "PostgresServer") -> None:
        """Make this cluster a streaming standby of ``primary``, which must be running (a base
        backup with its WAL; ``-R`` writes ``standby.signal`` and the ``primary_conninfo`` to
        follow it), after an immediate checkpoint (the default, spread, waits minutes): then
        ``start`` it. initdb's trust rules admit replication from 127.0.0.1."""
        self._own_root()
        self._run(
            str(self.BIN / "pg_basebackup"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", "postgres", "-X", "stream", "-R", "--no-sync", "--checkpoint", "fast",
        )  # fmt: skip

    def _own_root(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self.OS_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "start",
        )
        if not wait_for(self.is_up, timeout=30):
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {self.log()}")

    def stop(self) -> None:
        """Stop now (``-m fast``: open connections are cut, as in a crash or a failover)."""
        self._run(str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def destroy(self) -> None:
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):  # already stopped
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class WebServer:
    """The web server serving ``config.wsgi`` as the Dockerfile runs it (granian:
    ``python -m config.granian``), or gunicorn with its configuration (``config/gunicorn.py``);
    its settings from ``env``."""

    def __init__(self, *, env: dict[str, str], workdir: Path, server: str = "granian") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.server = server
        self.log_path = workdir / f"{server}.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        if self.server == "granian":
            return [sys.executable, "-m", "config.granian", "--host", "127.0.0.1", "--port", str(self.port)]
        return [
            str(Path(sys.executable).parent / "gunicorn"), "-c", "python:config.gunicorn", "config.wsgi",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--timeout", "60",
        ]  # fmt: skip

    def start(self) -> None:
        env = {"WEB_WORKERS": "1", **self.env} if self.server == "granian" else self.env
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        if not wait_for(self.is_up, timeout=30):
            self.stop()
            raise RuntimeError(f"{self.server} did not start: {self.output()}")

    def is_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text()


class CeleryWorker:
    """The Celery side of the Procfile: its ``worker`` (what a test watches: ``output()``,
    ``is_alive()``) and its ``beat`` (the sweep), with beat's schedule file in ``workdir``."""

    def __init__(self, *, broker_url: str, database: str, workdir: Path, extra_env: dict[str, str]) -> None:
        common: dict[str, Any] = {
            "broker_url": broker_url,
            "database": database,
            "workdir": workdir,
            "extra_env": extra_env,
        }
        self.worker = CeleryProcess("worker", **common)
        self.beat = CeleryProcess("beat", **common, overrides={"--schedule": str(workdir / "beat-schedule")})

    def start(self) -> None:
        self.worker.start()
        self.beat.start()

    def stop(self) -> None:
        self.beat.stop()
        self.worker.stop()

    def is_alive(self) -> bool:
        return self.worker.is_alive()

    def output(self) -> str:
        return self.worker.output()
