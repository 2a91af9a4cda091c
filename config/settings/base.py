"""Settings shared by every environment.

Everything that differs between machines is read through the one ``env`` object
(django-environ); local defaults point at the services on 127.0.0.1.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import environ
from kombu.entity import Queue

from cdp.personal import DEFAULT_PERSONAL_KEYS
from cdp.sealing import default_sealing_keys
from config.queues import DEFAULT as DEFAULT_QUEUE
from config.queues import queues_consumed, task_routes

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",  # thousands separators in the console's figures
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from our static files, not a CDN
    "cdp",
    "events",
    "identity",
    "members",
    "members.loyalty",  # its own app (label "loyalty"), inside members as the design card draws it
    "members.segments",  # likewise (label "segments")
    "members.consent",  # likewise (label "consent")
    "members.privacy",  # likewise (label "privacy")
    "members.insights",  # likewise (label "insights")
    "ops",  # alerting: above every app, it reads their state (see the layers contract)
    "members.imports",  # likewise (label "imports"): onboarding a brand's history from files
]

MIDDLEWARE = [
    # First: the request id and the request's duration (cdp.tracing) cover everything below.
    "cdp.tracing.RequestMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "cdp.middleware.DatabaseOutageMiddleware",
    "cdp.middleware.ClientAddressMiddleware",
    # Single-event ingestion that will be accepted, answered here before sessions, CSRF and
    # DRF (events.api.single: measured in docs/benchmarks.md); anything else goes on.
    "events.api.single.SingleCallMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "cdp.console.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/cdp"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL's JIT compiles any statement whose estimated cost passes jit_above_cost. The
# pipeline's batch statements (lateral walks over a few hundred keys, estimated high on tables
# without statistics) paid 50-90 ms of compilation to run for 10 ms: off unless asked for.
DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=" + (
    "on" if env.bool("DATABASE_JIT", default=False) else "off"
)
# With PostgreSQL unreachable (not refusing: a host down, a network partition) a request gives
# up connecting after this and answers 503 (cdp.errors), instead of hanging for minutes.
DATABASES["default"]["OPTIONS"]["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=5)
#: A streaming replica of the primary for the reads that may lag (cdp.replica: the insights
#: board and API, funnels, attribution, cohorts, segment pages and exports): empty, none, and
#: every read goes to the primary. Same connection settings as the primary; in tests a mirror of
#: it. What may and may not read from it: docs/scaling.md.
DATABASE_REPLICA_URL = env("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    _replica = env.db_url_config(DATABASE_REPLICA_URL)
    DATABASES["replica"] = {
        **_replica,
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {**DATABASES["default"]["OPTIONS"], **_replica.get("OPTIONS", {})},
        "TEST": {"MIRROR": "default"},
    }
#: Inert without the replica alias: every read and write on the primary.
DATABASE_ROUTERS = ["cdp.replica.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")

# Django's username-and-password check behind the log-in limits (cdp.login): the console's form
# and the admin's both authenticate through it.
AUTHENTICATION_BACKENDS = ["cdp.login.RateLimitedModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:search"
LOGOUT_REDIRECT_URL = "console:login"
#: Where ``collectstatic`` gathers the static files (the Docker image: at build time), for
#: production to serve them (WhiteNoise, config.settings.production).
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))

# Ingestion reads the body itself, with its own (Segment) limits; Django's cap sits above them.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["cdp.authentication.StaffTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON within cdp.json_limits' nesting limit (a too-deep body is a 400, not a crash).
    "DEFAULT_PARSER_CLASSES": [
        "cdp.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "cdp.errors.api_exception_handler",
    # Per staff token (RATE_LIMIT_STAFF); ingestion's views count per write key instead.
    "DEFAULT_THROTTLE_CLASSES": ["cdp.throttling.StaffTokenThrottle"],
    "DEFAULT_PAGINATION_CLASS": "cdp.pagination.IdCursorPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "CDP API",
    "DESCRIPTION": (
        "Customer data platform for omnichannel retail. Ingestion follows the Segment HTTP "
        "Tracking API (write key as the Basic user name); the staff API under /api/v1/ takes "
        "`Authorization: Token <token>` or `Bearer <token>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "events.models.Channel",
        "HistoryKindEnum": ["merge", "split"],
        "ConsentStateEnum": "members.consent.models.ConsentStatement.State",
    },
    # The docs pages load their scripts, styles and favicon from this app's static files: they
    # work on a closed network and send staff browsers to no third party.
    # Every operation's errors in the one shape (cdp.errors): declared once, by cdp.schema.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "cdp.schema.error_responses",
        "events.api.openapi.write_key_scheme",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Rate limits (cdp.ratelimits: a sliding window counter per key in Redis) ---------------
# A limit is COUNT/PERIOD ("600/min", "100/10s", "5/15min", "1000/h") or "off".
#: Requests per write key (a batch is one request). With Redis unreachable ingestion accepts
#: without a limit (fail open): events are never refused for want of a counter.
RATE_LIMIT_INGESTION = env("RATE_LIMIT_INGESTION", default="60000/min")
#: Requests per staff API token. With Redis unreachable the staff API answers 503 (fail closed).
RATE_LIMIT_STAFF = env("RATE_LIMIT_STAFF", default="1200/min")
#: Seconds a process keeps what a staff token stands for (user, permissions, scope) at most;
#: any change reaches every process at the next request anyway (cdp.staff_tokens), this bounds
#: one that bypasses the signals or a change made while Redis was unreachable.
STAFF_TOKEN_CACHE_SECONDS = env.float("STAFF_TOKEN_CACHE_SECONDS", default=10.0)
#: Log-in attempts (console and admin) per account, and per client address; a successful log-in
#: clears its account's count. With Redis unreachable nobody logs in (503) until it is back.
RATE_LIMIT_LOGIN_ACCOUNT = env("RATE_LIMIT_LOGIN_ACCOUNT", default="5/15min")
RATE_LIMIT_LOGIN_ADDRESS = env("RATE_LIMIT_LOGIN_ADDRESS", default="30/15min")
#: Per key: {"ingestion:<source name>": "200000/min", "staff:<username>": "off", ...}.
RATE_LIMIT_OVERRIDES: dict[str, str] = env.json("RATE_LIMIT_OVERRIDES", default={})
RATE_LIMIT_REDIS_URL = env("RATE_LIMIT_REDIS_URL", default=REDIS_URL)
RATE_LIMIT_KEY_PREFIX = env("RATE_LIMIT_KEY_PREFIX", default="cdp:rate")
#: A hit waits this long for Redis at most; after a failure Redis is not tried for
#: RATE_LIMIT_RETRY_SECONDS (requests don't each wait on a dead server), and the outage is
#: logged once per RATE_LIMIT_OUTAGE_LOG_SECONDS.
RATE_LIMIT_REDIS_TIMEOUT_SECONDS = env.float("RATE_LIMIT_REDIS_TIMEOUT_SECONDS", default=0.5)
RATE_LIMIT_RETRY_SECONDS = env.float("RATE_LIMIT_RETRY_SECONDS", default=2.0)
RATE_LIMIT_OUTAGE_LOG_SECONDS = env.float("RATE_LIMIT_OUTAGE_LOG_SECONDS", default=60.0)
#: Where the client's address is for the log-in limit: empty for the connection's (REMOTE_ADDR);
#: behind a proxy the META name of the header it sets (e.g. HTTP_X_REAL_IP, or
#: HTTP_X_FORWARDED_FOR, whose last entry, the one the proxy appended, is taken).
RATE_LIMIT_CLIENT_ADDRESS_HEADER = env("RATE_LIMIT_CLIENT_ADDRESS_HEADER", default="")

# --- Celery (broker: Redis; PostgreSQL stays the system of record) ----------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A safety net under memory (KiB): a pool process whose peak resident memory (billiard reads
# ``ru_maxrss`` on Linux) passed it when a task ends is replaced by a fresh one before the next
# (Celery's ``worker_max_memory_per_child``; the task itself is never cut short). A pool process
# runs at 120-160 MiB, and grows only as far as its largest batch's working set, which follows
# the longest member histories refreshed in full (docs/scaling.md, "Memory of a worker
# process"): only a real leak, or a task that needed far more (a nightly recompute at millions
# of members), reaches 1 GiB. 0: no limit.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = (
    env.int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", default=1024 * 1024) or None
)
# A publish must never hold a request hostage: with the broker down, ingestion still answers
# and the periodic sweep processes what was accepted.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker waits for the broker however long it is away: with Celery's default (100 retries,
# 30 s apart at most) it gives up after about 45 minutes of outage with an "Unrecoverable
# error" and exits - with status 0, so a supervisor must restart it whatever the status.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# On a lost broker connection, tasks already running finish their work (a pipeline batch
# commits or rolls back in PostgreSQL, which the broker does not touch) instead of being
# killed mid-transaction and done again; said explicitly because Celery 6 changes the default.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# No acknowledgement emulation (kombu keeping unacknowledged messages in Redis, restored when
# a channel closes or after ``visibility_timeout``). With it, a broker outage while a task ran
# killed the worker: on a lost connection Celery 5.7 tears the transport down (``collect``)
# before the consumer's channel is closed (its first close fails on the dead socket), and
# restoring the in-flight message then builds a pool from a connection that is gone:
# "Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")" in
# kombu 5.7's redis ``QoS.restore_unacked``; the worker exits (kombu 5.7.0 is the latest). The
# plain QoS logs a failed restore ("UNABLE TO RESTORE", a dump file) and the worker reconnects.
# Nothing the emulation kept is lost: Redis runs without persistence, so an outage loses queued
# and unacknowledged messages alike, and every task is a nudge for work that PostgreSQL holds
# and a periodic task catches up (the event sweep, every EVENT_SWEEP_INTERVAL_SECONDS; the
# webhook sweep; the nightly recompute): sooner than the one-hour visibility timeout did. The
# outage test in ``tests/events/test_worker_integration.py`` fails with the emulation on.
#
# A publish waits for Redis's answer at most ``socket_timeout`` seconds: without it (kombu's
# default: forever) a Redis that hangs or drops off the network without closing the connection
# (a partition, a failover, a stopped process) held every ingestion request publishing its
# nudge until Redis came back, and ingestion accepted nothing meanwhile. It must exceed the
# worker's BRPOP wait (kombu's ``brpop_timeout``, 1 s). ``tests/chaos/test_redis_stopped.py``
# (Redis frozen with SIGSTOP) fails without it.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 2, "ack_emulation": False}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
#: Each task goes to its stage's queue (config/queues.py: pipeline, members, segments, webhooks,
#: insights, bulk, and the default ``celery``). ``CELERY_TASK_ROUTES`` (JSON: task name or glob ->
#: {"queue": name}) is consulted first and wins. A worker started without ``-Q`` consumes every
#: queue (those of the stages and any the routes name); split pools each name theirs with ``-Q``:
#: docs/scaling.md.
TASK_ROUTE_OVERRIDES: dict[str, dict[str, str]] = env.json("CELERY_TASK_ROUTES", default={})
CELERY_TASK_ROUTES = task_routes(TASK_ROUTE_OVERRIDES)
CELERY_TASK_QUEUES = [Queue(name) for name in queues_consumed(TASK_ROUTE_OVERRIDES)]
CELERY_TASK_DEFAULT_QUEUE = DEFAULT_QUEUE

# --- Ingestion ----------------------------------------------------------------------------
# The event times accepted (timestamp, originalTimestamp, sentAt, and the time corrected for the
# device's clock): from this instant up to this many days after receipt. Anything outside is
# refused per event; a year-10000 time, once stored, failed every pipeline batch that read it.
EVENT_TIMESTAMP_EARLIEST = datetime.fromisoformat(
    env("EVENT_TIMESTAMP_EARLIEST", default="2000-01-01T00:00:00+00:00")
)
if EVENT_TIMESTAMP_EARLIEST.tzinfo is None:  # read as UTC, as an event's naive time is
    EVENT_TIMESTAMP_EARLIEST = EVENT_TIMESTAMP_EARLIEST.replace(tzinfo=UTC)
EVENT_TIMESTAMP_DAYS_AHEAD = env.int("EVENT_TIMESTAMP_DAYS_AHEAD", default=7)

# --- Event pipeline -----------------------------------------------------------------------
# Stages run, in order, on each claimed batch of accepted events, inside the transaction that
# takes them out of the queue (``PendingEvent``). Each is a dotted path to
# ``callable(events: list[Event]) -> None``.
EVENT_PIPELINE_STAGES: list[str] = env.list(
    "EVENT_PIPELINE_STAGES", default=["identity.services.identity_resolve_events"]
)
# Work that hangs off resolved events, each in its own transactions after a batch commits, so
# that resolving the next batch never waits for it: dotted paths to ``callable() -> int``
# that process one batch of their own queue and return how much they did (0: nothing left).
EVENT_PIPELINE_FOLLOW_UPS: list[str] = env.list(
    "EVENT_PIPELINE_FOLLOW_UPS", default=["members.services.members_refresh_batch"]
)
EVENT_PIPELINE_BATCH_SIZE = env.int("EVENT_PIPELINE_BATCH_SIZE", default=500)
# Told which members each member refresh recomputed, in its transaction: dotted paths to
# ``callable(member_ids: set[int]) -> None``. The KPI rollups queue them (members/insights).
MEMBERS_REFRESH_HOOKS: list[str] = env.list(
    "MEMBERS_REFRESH_HOOKS", default=["members.insights.services.members_changed"]
)
# How often beat rolls up the KPIs of the members and days that changed (docs/insights.md).
INSIGHTS_REFRESH_INTERVAL_SECONDS = env.int("INSIGHTS_REFRESH_INTERVAL_SECONDS", default=300)
#: When the KPI rollups are computed from scratch each night (hour:minute, TIME_ZONE), after
#: the segments' nightly recompute (SEGMENTS_NIGHTLY_AT).
INSIGHTS_NIGHTLY_AT = env("INSIGHTS_NIGHTLY_AT", default="04:45")
#: Connections the KPI rollups from scratch read the members on at once, a part of them each
#: (members/insights/services.py ``_from_scratch``): each is one PostgreSQL backend, one core.
INSIGHTS_NIGHTLY_CONNECTIONS = env.int("INSIGHTS_NIGHTLY_CONNECTIONS", default=2)
#: Funnels read the per-member summary of events (members/insights/funnel_events.py) when it
#: answers the funnel and is up to date; False: always the event log (docs/insights-funnels.md).
INSIGHTS_FUNNEL_SUMMARY = env.bool("INSIGHTS_FUNNEL_SUMMARY", default=True)
#: Connections a funnel read from that summary runs on at once, a range of member ids each
#: (members/insights/funnel_services.py ``funnel_results``): each is one PostgreSQL backend, one
#: core, and PostgreSQL runs none of that query in parallel workers. 1: one connection. Only
#: when step 1's members span at least INSIGHTS_FUNNEL_SPLIT_FROM ids (below that, a second
#: connection costs more than it saves).
INSIGHTS_FUNNEL_CONNECTIONS = env.int("INSIGHTS_FUNNEL_CONNECTIONS", default=2)
INSIGHTS_FUNNEL_SPLIT_FROM = env.int("INSIGHTS_FUNNEL_SPLIT_FROM", default=100_000)
# A worker vacuums the queue after every this many events it claimed (0: never, leaving it to
# autovacuum): claims take the oldest rows, and each claim walks the index entries of every
# row claimed before it until a vacuum removes them, which grows with a backlog.
EVENT_PIPELINE_QUEUE_VACUUM_EVERY = env.int("EVENT_PIPELINE_QUEUE_VACUUM_EVERY", default=50_000)
# What ``/health/`` counts as parked (an event or member the pipeline failed on, out of the
# way until replayed): a name and a dotted path to ``callable() -> int``. While any count is
# above zero the platform is "degraded": processing goes on, but someone must look.
HEALTH_PARKED_COUNTS: dict[str, str] = {
    "events": "events.parking.parked_events_count",
    "members": "members.parking.parked_members_count",
}
MEMBER_REFRESH_BATCH_SIZE = env.int("MEMBER_REFRESH_BATCH_SIZE", default=500)
# A worker vacuums the refresh's queues (identity's outbox of changed members, the dirty marks)
# after every this many rows it took from each (0: never, leaving it to autovacuum), as the
# pipeline does its own (EVENT_PIPELINE_QUEUE_VACUUM_EVERY, cdp.db.queue_vacuum_due).
MEMBER_REFRESH_QUEUE_VACUUM_EVERY = env.int("MEMBER_REFRESH_QUEUE_VACUUM_EVERY", default=50_000)
#: Whether the member refresh brings members who only gained later events up to date from
#: those events and their stored state (``members.incremental``); off, every refresh
#: recomputes from all of the member's events (what it did before; a way back, and the
#: benchmark's "before").
MEMBER_REFRESH_INCREMENTAL = env.bool("MEMBER_REFRESH_INCREMENTAL", default=True)
EVENT_SWEEP_INTERVAL_SECONDS = env.int("EVENT_SWEEP_INTERVAL_SECONDS", default=15)
#: A web process publishes the pipeline's nudge for single-event requests at most this often
#: (cdp.tasks.CoalescedEnqueue): a worker woken once processes every waiting event, and one
#: publish per request cost as much as storing the event.
EVENT_NUDGE_INTERVAL_SECONDS = env.float("EVENT_NUDGE_INTERVAL_SECONDS", default=0.05)
#: How often beat looks for points that expired and tier reviews that fell due.
LOYALTY_RECHECK_INTERVAL_SECONDS = env.int("LOYALTY_RECHECK_INTERVAL_SECONDS", default=300)
#: How often beat looks for members whose tags or segments change with time alone (a rule's
#: "in the last N days" window closing, a lifecycle stage running out).
SEGMENTS_RECHECK_INTERVAL_SECONDS = env.int("SEGMENTS_RECHECK_INTERVAL_SECONDS", default=60)
#: When the full recompute of every tag and segment runs each night (hour:minute, TIME_ZONE).
SEGMENTS_NIGHTLY_AT = env("SEGMENTS_NIGHTLY_AT", default="03:30")
#: PostgreSQL work_mem of a full recompute's transaction (members.locks.full_compute_memory).
SEGMENTS_COMPUTE_WORK_MEM = env("SEGMENTS_COMPUTE_WORK_MEM", default="256MB")

# --- Segment webhooks (members.segments.webhooks) -------------------------------------------
#: How often beat looks for deliveries due (retries after backoff, nudges that were lost).
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.int("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=30)

# Imports (members.imports): where uploaded files are kept while their job runs (a directory
# the web and worker processes share), and how long a running job may commit nothing before
# beat sends it to a worker again (it resumes at its checkpoint; a batch takes well under a
# second, so ten minutes means its worker is gone).
IMPORT_DIR = Path(env("IMPORT_DIR", default=str(BASE_DIR / "var" / "imports")))
IMPORT_STALLED_SECONDS = env.int("IMPORT_STALLED_SECONDS", default=600)
IMPORT_MAX_UPLOAD_BYTES = env.int("IMPORT_MAX_UPLOAD_BYTES", default=4 * 1024**3)
# Processes the member refresh of an imported history runs in (``import --resolve``,
# ``imported_resolve``): one per core the command may take. Taken a member at a time, one of
# them resolves the backlog first while the others refresh beside it (``pipeline_drain_beside``).
IMPORT_REFRESH_PROCESSES = env.int("IMPORT_REFRESH_PROCESSES", default=2)
#: The whole of one delivery (connect, send, answer) must fit in this.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
#: Changes per delivery at most.
WEBHOOK_BATCH_SIZE = env.int("WEBHOOK_BATCH_SIZE", default=500)
#: After the n-th failure in a row the next try waits min(cap, base * 2^(n-1)) seconds, less a
#: random part of up to half (jitter); the WEBHOOK_MAX_FAILURES-th failure disables the webhook.
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
WEBHOOK_RETRY_CAP_SECONDS = env.int("WEBHOOK_RETRY_CAP_SECONDS", default=3600)
WEBHOOK_MAX_FAILURES = env.int("WEBHOOK_MAX_FAILURES", default=20)
#: Refuse URLs that are or resolve to private, loopback, link-local or reserved addresses, so
#: a webhook cannot reach inside the network (local.py and test.py allow them).
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=False)
WEBHOOK_DELIVERY_LOG_DAYS = env.int("WEBHOOK_DELIVERY_LOG_DAYS", default=30)

# --- Identity resolution ------------------------------------------------------------------
# Per identifier type overrides of identity.rules.DEFAULT_TYPE_RULES, e.g.
# {"phone": {"limit": 1}, "cashier_terminal": {"merges": False}}.
IDENTITY_RULES: dict[str, dict] = env.json("IDENTITY_RULES", default={})
IDENTITY_DEFAULT_REGION = env("IDENTITY_DEFAULT_REGION", default="CN")
IDENTITY_BLOCKED_VALUES: list[str] = env.list(
    "IDENTITY_BLOCKED_VALUES",
    default=[
        "0",
        "-1",
        "null",
        "nil",
        "none",
        "undefined",
        "nan",
        "anonymous",
        "unknown",
        "n/a",
        "na",
        "test",
        "guest",
    ],
)

# Profile traits: at equal event times, a value from an earlier channel here wins.
MEMBER_TRAIT_CHANNEL_PRECEDENCE: list[str] = env.list(
    "MEMBER_TRAIT_CHANNEL_PRECEDENCE", default=["pos", "mini_program", "app", "web"]
)

# Spend and order values are summed in this currency (ISO 4217); orders in another currency are
# kept with their own and counted apart, never added as if they were the same money.
CDP_CURRENCY = env("CDP_CURRENCY", default="CNY").upper()

# Consent (members.consent, docs/consent.md): the purposes a member grants, denies or withdraws
# consent to, each on its own; those named marketing_* are the marketing purposes. Every outflow
# (segment pages, exports, webhooks, coupon campaigns) declares a purpose and leaves out members
# without consent to it in force.
CONSENT_PURPOSES = env.list(
    "CONSENT_PURPOSES",
    default=[
        "marketing_sms",
        "marketing_wechat",
        "marketing_email",
        "marketing_push",
        "personalization",
        "analytics",
    ],
)
# The legacy single consent trait: true grants and false (false, 0, "no", "off") denies every
# marketing purpose at once, as if the event had stated each of them.
MARKETING_CONSENT_TRAIT = env("MARKETING_CONSENT_TRAIT", default="marketing_consent")

# Personal data (cdp.personal, cdp.privacy): keys whose values are personal wherever a source
# puts them (a bare key, at any depth) or at one path (dotted, "*" for any one key), on top of
# every value that is a phone number or an email address. Shown masked to staff without the
# contact details permission, in the API, the console and exports alike.
PERSONAL_DATA_KEYS: list[str] = env.list("PERSONAL_DATA_KEYS", default=list(DEFAULT_PERSONAL_KEYS))
# How many proxies of our own (load balancer, nginx) stand before the app: the audit log takes the
# client's address from X-Forwarded-For as the nearest of them saw it. 0: REMOTE_ADDR itself.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Lifecycle stage (computed tags lifecycle-*, members.segments.computed), in days: new while the
# first purchase is within LIFECYCLE_NEW_DAYS, then active while the last purchase is within
# LIFECYCLE_ACTIVE_DAYS, at risk while it is within LIFECYCLE_CHURN_DAYS, churned after.
LIFECYCLE_NEW_DAYS = env.int("LIFECYCLE_NEW_DAYS", default=30)
LIFECYCLE_ACTIVE_DAYS = env.int("LIFECYCLE_ACTIVE_DAYS", default=90)
LIFECYCLE_CHURN_DAYS = env.int("LIFECYCLE_CHURN_DAYS", default=180)

# Log lines: JSON (LOG_FORMAT=json, production's default: one object a line, with the request id
# and whatever ``extra`` a line carries, for a log shipper) or plain text for a terminal. Both
# carry the request id (cdp.tracing), also in the worker's lines of tasks a request sent.
LOG_FORMAT = env("LOG_FORMAT", default="plain")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "cdp.tracing.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Metrics (cdp.metrics, GET /metrics) ----------------------------------------------------
# Multiprocess mode is switched on by PROMETHEUS_MULTIPROC_DIR in the environment of every
# process (web and workers alike; see the README's Operations section).
#: A scraper sending ``Authorization: Bearer <token>`` may read /metrics ...
METRICS_TOKEN = env("METRICS_TOKEN", default="")
#: ... and so may any client from these networks (CIDRs). Production allows none by default:
#: behind a proxy on the same host every request comes from 127.0.0.1.
METRICS_ALLOWED_NETWORKS: list[str] = env.list(
    "METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"]
)
#: Read at scrape time: dotted paths to ``callable() -> Iterable[prometheus Metric]``.
METRICS_COLLECTORS: list[str] = env.list(
    "METRICS_COLLECTORS", default=["events.metrics.pipeline_collect", "members.metrics.members_collect"]
)

# --- Alerting (ops) ----------------------------------------------------------------------------
#: How often beat evaluates the alert rules.
ALERT_EVALUATE_INTERVAL_SECONDS = env.int("ALERT_EVALUATE_INTERVAL_SECONDS", default=60)
#: Conditions beyond the built-in ones (ops.conditions), for rules to name: name -> dotted path to
#: ``callable(cdp.alerting.Check) -> list[cdp.alerting.Finding]``, e.g. insights' KPI drop
#: {"kpi_drop": "members.insights.alerts.kpi_drop"}.
ALERT_CONDITIONS: dict[str, str] = env.json("ALERT_CONDITIONS", default={})
#: With PostgreSQL unreachable (rules and targets live there), ``manage.py alerts_evaluate`` tells
#: these instead, every ALERT_OUTAGE_REPEAT_MINUTES while it lasts (ops.outage).
ALERT_OUTAGE_EMAILS: list[str] = env.list("ALERT_OUTAGE_EMAILS", default=[])
ALERT_OUTAGE_WEBHOOK_URLS: list[str] = env.list("ALERT_OUTAGE_WEBHOOK_URLS", default=[])
ALERT_OUTAGE_REPEAT_MINUTES = env.int("ALERT_OUTAGE_REPEAT_MINUTES", default=30)
ALERT_OUTAGE_STATE_FILE = env(
    "ALERT_OUTAGE_STATE_FILE", default=str(BASE_DIR / ".run" / "alerts-outage.json")
)
#: Alert emails (Django's email backend: EMAIL_URL, e.g. smtp://user:pass@host:587, or consolemail://).
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="cdp-alerts@localhost")
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))

# --- Personal data: erasure, access requests, retention (members.privacy) -----------------------
#: The key of the fingerprints an erasure keeps of each identifier it erased (HMAC-SHA256,
#: ``cdp.fingerprints``): a later event carrying the same phone, email or id is recognised by
#: them and stripped. Never change it: the erased values are gone, so fingerprints made under
#: another key cannot be made again, and the people they stand for would come back. Required in
#: production (config.settings.production); elsewhere derived from the secret key.
PRIVACY_FINGERPRINT_KEY = env("PRIVACY_FINGERPRINT_KEY", default=f"fingerprints:{SECRET_KEY}")
#: Personal data at rest (cdp.vault, README "Personal data at rest"): phones, emails and names are
#: sealed (AES-256-GCM) under these keys, ``id=base64 32 bytes`` separated by commas, the one that
#: seals first; to rotate, put a new key first and run ``manage.py seal_personal_data --rotate``,
#: then drop the old one. Required in production; elsewhere derived from the secret key.
PRIVACY_SEALING_KEYS = env("PRIVACY_SEALING_KEYS", default=default_sealing_keys(SECRET_KEY))
#: The key of the blind indexes (HMAC-SHA256) that phones and emails are matched and looked up
#: by, and names searched by. Never change it: every index would have to be computed again.
#: Required in production; elsewhere derived from the secret key.
PRIVACY_BLIND_INDEX_KEY = env("PRIVACY_BLIND_INDEX_KEY", default=f"blind-index:{SECRET_KEY}")
#: A person erased may sign up again as a new member: a sign-up event (a track call named in
#: PRIVACY_SIGNUP_EVENTS) carrying their erased identifiers releases them from its event time.
#: Off: everything carrying them is stripped, for good.
PRIVACY_ALLOW_SIGNUP_AFTER_ERASURE = env.bool("PRIVACY_ALLOW_SIGNUP_AFTER_ERASURE", default=False)
PRIVACY_SIGNUP_EVENTS: list[str] = env.list("PRIVACY_SIGNUP_EVENTS", default=["Signed Up"])
#: Traits holding the person's names: an erasure looks for them, in any letter case, in every
#: text it cleans (split reasons, audit entries, webhook answers, other people's events).
PRIVACY_NAME_TRAITS: list[str] = env.list(
    "PRIVACY_NAME_TRAITS",
    default=["name", "first_name", "last_name", "firstName", "lastName", "full_name", "nickname", "username"],
)
#: Traits stored sealed: phones, emails and names (their values cannot be compared by segment
#: rules, which may only ask whether they exist). The name traits are searchable by their terms.
PRIVACY_SEALED_TRAITS: list[str] = env.list(
    "PRIVACY_SEALED_TRAITS", default=["phone", "email", *PRIVACY_NAME_TRAITS]
)
#: The context keys a stripped event keeps (technical, about the software, not the person); the
#: rest (ip, userAgent, location, page, referrer, device ids, traits, externalIds) goes.
PRIVACY_EVENT_CONTEXT_KEPT: list[str] = env.list(
    "PRIVACY_EVENT_CONTEXT_KEPT", default=["library", "app", "os", "locale", "timezone", "screen"]
)
#: Called with the erased member ids in the erasure's transaction, after the platform's own
#: steps: dotted paths to ``callable(member_ids: list[int]) -> int`` (how many rows they erased),
#: for apps that privacy may not import (insights sits above it) and a deployment's own apps
#: that hold more about people (the environment's list comes after the platform's).
PRIVACY_ERASURE_HOOKS: list[str] = [
    "members.insights.funnel_events.summary_rebuild",
    *env.list("PRIVACY_ERASURE_HOOKS", default=[]),
]
#: More sections of an access export: name -> dotted path to ``callable(member_ids: list[int])``
#: returning JSON-ready data.
PRIVACY_EXPORT_SECTIONS: dict[str, str] = env.json("PRIVACY_EXPORT_SECTIONS", default={})

# Retention, per data class, in days (0: kept until erased). A beat job applies it every night
# at RETENTION_RUN_AT (TIME_ZONE), RETENTION_BATCH_SIZE rows per transaction; ``manage.py
# apply_retention --dry-run`` shows what it would do.
#: Raw event payloads: past this, events keep what identity and the profile read (ids, traits)
#: and their properties without personal fields; context (addresses, user agents, locations,
#: pages) goes.
RETENTION_EVENT_PAYLOAD_DAYS = env.int("RETENTION_EVENT_PAYLOAD_DAYS", default=395)
#: Refused events (kept to show a source what was wrong): deleted.
RETENTION_REJECTED_EVENT_DAYS = env.int("RETENTION_REJECTED_EVENT_DAYS", default=30)
#: Segment webhook delivery logs: WEBHOOK_DELIVERY_LOG_DAYS (above), deleted.
#: Audit entries: deleted (PIPL asks for records of processing; three years by default).
RETENTION_AUDIT_DAYS = env.int("RETENTION_AUDIT_DAYS", default=1095)
#: Members known only by anonymous ids and devices (no user id, phone, email, card, WeChat id)
#: with no event for this long: erased, without blocking their ids (they may come back as new).
RETENTION_ANONYMOUS_MEMBER_DAYS = env.int("RETENTION_ANONYMOUS_MEMBER_DAYS", default=395)
RETENTION_ANONYMOUS_TYPES: list[str] = env.list(
    "RETENTION_ANONYMOUS_TYPES", default=["anonymous_id", "device_id"]
)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=1000)
RETENTION_RUN_AT = env("RETENTION_RUN_AT", default="04:15")
