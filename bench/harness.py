"""What every benchmark shares: the import path, the services' environment, Django in this
process, ``manage.py`` in a child, and the benchmark's block in ``docs/benchmarks.md``.

Import it first (``import harness``): run as ``python bench/<name>.py``, bench/ comes first
on ``sys.path`` and ``bench/identity.py`` or ``bench/members.py`` would shadow the app of that
name. Importing this module puts the project first and bench/ last (for the helpers), so
``import identity`` is the app and ``import ingest`` the benchmark.

Each benchmark has its own PostgreSQL database and Redis database, never ``cdp`` or the
test databases. ``BENCH_DATABASE_SUFFIX`` (say ``_alice``) gives every benchmark database a
suffix and ``BENCH_REDIS_URL`` replaces every benchmark's Redis database, so that two people
on one machine do not empty each other's data. ``BENCH_DATABASE_PORT`` points every
benchmark at another PostgreSQL on 127.0.0.1 (a private cluster with ``pg_stat_statements``
loaded, to profile by statement without touching the shared server's configuration).
"""

import base64
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() not in (ROOT, BENCH)), str(BENCH)]

DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = BENCH / "results"  # raw JSON per run (git-ignored)
#: The identity block closes docs/benchmarks.md; a benchmark's new block goes above it.
IDENTITY_START = (
    "<!-- bench/identity.py: identity resolution benchmarks from here to the end of the file. -->"
)


def database_name(name: str) -> str:
    """A benchmark's database, with the ``BENCH_DATABASE_SUFFIX`` of whoever runs it."""
    return name + os.environ.get("BENCH_DATABASE_SUFFIX", "")


def database_url(name: str) -> str:
    port = os.environ.get("BENCH_DATABASE_PORT", "5432")
    return f"postgres://postgres@127.0.0.1:{port}/{name}"


def broker_url(db: int) -> str:
    """A benchmark's Redis database (its broker and cache), unless ``BENCH_REDIS_URL`` says."""
    return os.environ.get("BENCH_REDIS_URL") or f"redis://127.0.0.1:6379/{db}"


def service_env(*, database: str, broker: str) -> dict[str, str]:
    """The environment of the platform as deployed (production settings), on a benchmark's
    database and broker."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "bench-only",
        "PRIVACY_FINGERPRINT_KEY": "bench-only",
        "PRIVACY_SEALING_KEYS": "bench=" + base64.b64encode(b"bench-only-sealing-key-32-bytes!").decode(),
        "PRIVACY_BLIND_INDEX_KEY": "bench-only",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback, no TLS proxy in front
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker,
        "REDIS_URL": broker,
        "LOG_LEVEL": "WARNING",
    }


def manage(*args: str, env: dict[str, str]) -> str:
    """Run ``manage.py`` in a child with ``env`` over this process's environment; its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def django_setup(env: dict[str, str]) -> None:
    """Django in this process, with ``env`` (once per process: Django sets up only once)."""
    os.environ.update(env)
    import django

    django.setup()


def bench_script(name: str) -> ModuleType:
    """Another benchmark's module, loaded from bench/ under ``bench_<name>`` (a plain import
    of ``members`` is the app)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no benchmark bench/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docs_insert(
    section: str, *, intro: str, marker: str, start: str | None = None, end: str | None = None
) -> None:
    """Insert this run above the earlier ones in its benchmark's block of docs/benchmarks.md
    and regenerate the block's intro; the rest of the file stays as it is.

    A block is ``start``, the intro, ``marker``, the runs newest first, then ``end``. The
    ingestion block heads the file (no ``start``: everything below its marker is kept below
    the new run); the identity block closes it (no ``end``). A block not in the file yet goes
    just above the identity block, or at the end."""
    text = DOCS.read_text() if DOCS.exists() else ""
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    if start is None:
        if marker in text:
            history = text.split(marker, 1)[1]
        else:  # a file from before the markers: keep it all below, less its title
            history = text.split("\n", 1)[1] if text.startswith("# ") else text
        DOCS.write_text(f"{intro}\n{marker}\n\n{section.rstrip()}\n\n{history.strip()}\n".rstrip() + "\n")
        return
    if end is None:
        before, _, block = text.partition(start)
        history = block.split(marker, 1)[1] if marker in block else ""
        head = f"{before.rstrip()}\n\n" if before.strip() else ""
        DOCS.write_text(
            f"{head}{start}\n\n{intro}\n{marker}\n\n{section.rstrip()}\n\n{history.strip()}".rstrip() + "\n"
        )
        return
    history = ""
    if start in text and end in text:
        before, _, rest = text.partition(start)
        block, _, after = rest.partition(end)
        history = block.split(marker, 1)[1] if marker in block else ""
    elif IDENTITY_START in text:
        before, _, after = text.partition(IDENTITY_START)
        after = IDENTITY_START + after
    else:
        before, after = text, ""
    block = f"{start}\n\n{intro}\n{marker}\n\n{section.rstrip()}\n\n{history.strip()}".rstrip()
    DOCS.write_text(f"{before.rstrip()}\n\n{block}\n\n{end}\n\n{after.lstrip()}".strip() + "\n")
