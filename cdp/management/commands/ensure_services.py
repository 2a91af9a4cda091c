"""Fail fast, with what to start, when PostgreSQL or Redis is not reachable.

Runs before anything touches the database, so it speaks to the servers directly; with
``--create-database`` it also creates the configured database when the server has none.
"""

from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from psycopg import sql

_START_POSTGRES = (
    "Start PostgreSQL, e.g. `sudo pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) "
    "main start` (Debian/Ubuntu), `brew services start postgresql` (macOS) or "
    "`docker compose up -d postgres`; or point DATABASE_URL at a running server."
)
_START_REDIS = (
    "Start Redis, e.g. `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
    "--appendonly no`, `brew services start redis` or `docker compose up -d redis`; "
    "or point REDIS_URL / CELERY_BROKER_URL at a running server."
)


class Command(BaseCommand):
    help = "Check that PostgreSQL and Redis are reachable (and create the database if asked)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--create-database", action="store_true")
        parser.add_argument(
            "--server-only",
            action="store_true",
            help="only check the PostgreSQL server (tests create their own database)",
        )

    def handle(self, *args: object, create_database: bool, server_only: bool, **options: object) -> None:
        db = settings.DATABASES["default"]
        where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
        params: dict[str, Any] = {
            "host": db.get("HOST") or None,
            "port": db.get("PORT") or None,
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "connect_timeout": 3,
        }
        try:
            with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (db["NAME"],)
                ).fetchone()
                if not exists and not server_only:
                    if not create_database:
                        raise CommandError(f"Database {db['NAME']!r} does not exist on {where}.")
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
                    self.stdout.write(f"Created database {db['NAME']!r} on {where}.")
        except psycopg.OperationalError as exc:
            raise CommandError(
                f"PostgreSQL is not reachable at {where}: {str(exc).strip()}\n{_START_POSTGRES}"
            ) from exc

        broker = settings.CELERY_BROKER_URL
        try:
            redis.Redis.from_url(broker, socket_connect_timeout=3).ping()
        except (redis.RedisError, OSError) as exc:
            parts = urlsplit(broker)
            raise CommandError(
                f"Redis is not reachable at {parts.hostname}:{parts.port or 6379}: {exc}\n{_START_REDIS}"
            ) from exc
        self.stdout.write(self.style.SUCCESS(f"PostgreSQL ({where}) and Redis are reachable."))
