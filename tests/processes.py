"""Real processes for integration tests: a private Redis the test may stop and restart, and
the Celery worker and beat started exactly as the ``Procfile`` starts them (prefork, same
options), against the test database."""

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

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
    ``database``; ``overrides`` replace the value of an option (a path, say)."""

    def __init__(
        self,
        process: str,
        *,
        broker_url: str,
        database: str,
        workdir: Path,
        extra_env: dict[str, str],
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.log_path = workdir / f"{process}.log"
        self.env = celery_environment(
            broker_url=broker_url, database=database, workdir=workdir, extra_env=extra_env
        )
        arguments = procfile_celery_arguments(process)
        for option, value in (overrides or {}).items():
            arguments[arguments.index(option) + 1] = value
        self.command = [sys.executable, "-m", "celery", *arguments]
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


class CeleryWorker:
    """The Celery side of the Procfile: its ``worker`` (what a test watches: ``output()``,
    ``is_alive()``) and its ``beat`` (the sweep), with beat's schedule file in ``workdir``."""

    def __init__(self, *, broker_url: str, database: str, workdir: Path, extra_env: dict[str, str]) -> None:
        common = {"broker_url": broker_url, "database": database, "workdir": workdir, "extra_env": extra_env}
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
