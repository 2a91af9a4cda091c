"""Tests: the real PostgreSQL and Redis, tasks eager unless a test runs a real worker."""

import os
import time

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-a-secret")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true")  # receivers on localhost
# Limits far above what any test sends (tests of the limits set their own), counted under a
# prefix of this process: ids restart with each test database, and xdist workers run at once.
os.environ.setdefault("RATE_LIMIT_INGESTION", "1000000/min")
os.environ.setdefault("RATE_LIMIT_STAFF", "1000000/min")
os.environ.setdefault("RATE_LIMIT_LOGIN_ACCOUNT", "1000/min")
os.environ.setdefault("RATE_LIMIT_LOGIN_ADDRESS", "1000000/min")
os.environ.setdefault("RATE_LIMIT_KEY_PREFIX", f"cdp-test:{os.getpid()}:{time.time_ns()}:rate")

from config.settings.base import *  # noqa: F403

# A real worker started by an integration test sets CELERY_TASK_ALWAYS_EAGER=false.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)  # noqa: F405
CELERY_TASK_EAGER_PROPAGATES = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
for _alias in DATABASES.values():  # noqa: F405 - the primary and, with DATABASE_REPLICA_URL, its mirror
    _alias["CONN_MAX_AGE"] = 0
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
