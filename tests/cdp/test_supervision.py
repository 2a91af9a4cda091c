"""Processes that exit are started again: ``bin/respawn`` under honcho (``make run``, as the
Procfile says), and the compose file's restart policies."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.processes import ROOT, RedisServer, celery_environment, procfile_celery_arguments, wait_for

RESPAWN = str(ROOT / "bin" / "respawn")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_respawn_starts_the_command_again_whenever_it_exits(tmp_path):
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [RESPAWN, "sh", "-c", f"echo run >> {runs}; exit 3"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_for(lambda: len(lines(runs)) >= 3, timeout=15)  # after 1 s, then 2 s
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "exited with status 3; starting it again in 1s" in stderr
    assert "exited with status 3; starting it again in 2s" in stderr


def test_respawn_passes_a_stop_on_and_does_not_start_the_command_again(tmp_path):
    runs, stops = tmp_path / "runs", tmp_path / "stops"
    command = f'echo run >> {runs}; trap "echo stopped >> {stops}; exit 0" TERM; while :; do sleep 0.05; done'
    process = subprocess.Popen([RESPAWN, "sh", "-c", command])
    assert wait_for(lambda: lines(runs) == ["run"], timeout=10)

    process.terminate()  # to respawn alone, as systemd and Docker signal the main process

    assert process.wait(timeout=10) == 0  # the command's status
    assert lines(stops) == ["stopped"]
    assert lines(runs) == ["run"]


def test_the_compose_file_restarts_every_service_and_runs_the_procfile_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]

    assert {name: service.get("restart") for name, service in services.items()} == dict.fromkeys(
        services, "unless-stopped"
    )
    assert services["worker"]["command"].split() == ["celery", *procfile_celery_arguments("worker")]
    beat = ["celery", *procfile_celery_arguments("beat")]
    beat[beat.index("--schedule") + 1] = "/tmp/celerybeat-schedule"
    assert services["beat"]["command"].split() == beat


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.integration
def test_make_run_starts_a_worker_again_when_it_dies(tmp_path):
    """``honcho start -f Procfile worker`` (what ``make worker`` runs, and ``make run`` with
    web and beat): the worker's main process killed outright comes back, and honcho, which
    stops everything when one process exits, goes on."""
    broker = RedisServer()
    broker.start()
    output = tmp_path / "honcho.log"
    env = celery_environment(broker_url=broker.url, database="unused", workdir=tmp_path, extra_env={})
    with output.open("w") as log:
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "worker"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert wait_for(lambda: output.read_text().count(" ready.") == 1, timeout=30), output.read_text()
        respawn = int(re.search(r"worker\.1 started \(pid=(\d+)\)", output.read_text())[1])
        assert Path(f"/proc/{respawn}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sh", b"bin/respawn"]
        [worker] = children(respawn)

        os.kill(worker, signal.SIGKILL)

        assert wait_for(lambda: output.read_text().count(" ready.") == 2, timeout=30), output.read_text()
        assert honcho.poll() is None
        [restarted] = children(respawn)
        assert restarted != worker
    finally:
        honcho.send_signal(signal.SIGINT)  # Ctrl-C
        honcho.wait(timeout=30)
        broker.stop()
    assert not Path(f"/proc/{restarted}").exists()  # stopped with honcho, not orphaned
