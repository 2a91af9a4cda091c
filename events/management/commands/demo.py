"""``manage.py demo --members 2000``: demo sources and a seeded, cross-channel event history,
stored through the real ingestion path, then a banner with everything needed to try it out.

With ``--process`` (``make demo`` and ``make run`` pass it) it then processes what it stored as
the worker would (identity, profiles, points, segments), so that the banner says how many
members the events made, as the database counts them; without, the worker does that later and
the banner says how many there are so far.

``make run`` calls it before starting the service. It is safe to run again and again:
sources are found by name and events dedupe on ``(source, messageId)``, so a second run with
the same seed stores nothing new. Only the credentials it prints are new each time: write
keys and tokens are stored hashed, so issuing fresh ones is the only way to show any.
"""

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue, tokens_revoke
from events.contract import Message, Rejection, message_parse
from events.demo import DEMO_SOURCES, WEB_SOURCE_SLUG, DemoEvent, demo_stream
from events.models import Channel, Event, Source
from events.pipeline import events_process_pending
from events.services import events_ingest, source_create, source_rotate_key, source_set_enabled
from members.insights.demo_funnels import campaign_stream, insights_funnels_demo_setup
from members.loyalty.demo import loyalty_demo_coupons, loyalty_demo_setup
from members.models import Member
from members.segments.demo import segments_demo_setup

#: Events per ``events_ingest`` call: the size of a busy SDK batch, one INSERT each.
BATCH_SIZE = 500
ADMIN_USERNAME = "demo-admin"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: Role
    sees: str  # what the banner says the role is for


#: A console login for every staff role that has console pages, administrator last (the
#: checkout role works through the API only).
DEMO_LOGINS = (
    DemoLogin("demo-agent", Role.CRM_AGENT, "a CRM agent: members, phones and emails masked"),
    DemoLogin("demo-manager", Role.CRM_MANAGER, "a CRM manager: contact details in full, splits, points"),
    DemoLogin("demo-marketing", Role.MARKETING, "marketing: segments, tags, coupon campaigns"),
    DemoLogin("demo-analyst", Role.ANALYST, "an analyst: the insights board (counts and sums, no member)"),
    DemoLogin(ADMIN_USERNAME, Role.ADMIN, "an administrator: everything, /admin/ too"),
)
TOKEN_NAME = "demo"  # noqa: S105 - a label, not a secret
_FALLBACK_USER_ID = "u-demo-curl"


class _ProgressStream:
    """Lets tqdm draw on a command's stderr: no added newline, no error colouring, and
    the terminal check tqdm uses to stay quiet when output is not a terminal."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text, style_func=lambda plain: plain, ending="")

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return self._out.isatty()

    @property
    def encoding(self) -> str | None:
        # tqdm draws a smooth Unicode bar only where the stream says it can take one.
        return getattr(self._out, "encoding", None)


@dataclass(frozen=True)
class _Loaded:
    stored: int
    duplicates: int
    rejected: int
    example_user_id: str  # a logged-in web customer, so the curl example joins a real profile


@dataclass(frozen=True)
class _Credentials:
    write_key: str
    token: str
    passwords: dict[str, str]  # by username, for each of DEMO_LOGINS


@dataclass(frozen=True)
class _Members:
    active: int  # members the events made, as the database counts them
    merged: int  # members merged into another one when later events linked them
    processed: bool  # False: left to the worker (no --process), more to come


class _Loader:
    """Parses demo messages as the batch endpoint does and stores them per source, one
    ``events_ingest`` call per ``BATCH_SIZE`` messages."""

    def __init__(self, sources: dict[str, Source]) -> None:
        self.sources = sources
        self.pending: dict[str, tuple[list[Message], list[Rejection]]] = {slug: ([], []) for slug in sources}
        self.stored = self.duplicates = self.rejected = 0

    def add(self, event: DemoEvent) -> None:
        messages, rejections = self.pending[event.source_slug]
        # Parsed at the simulated arrival time, not now: the clock-skew rule compares it with
        # sentAt, and a late store upload must keep the time of its sale.
        parsed = message_parse(
            event.message,
            received_at=event.received_at,
            index=len(messages) + len(rejections),
            default_currency=self.sources[event.source_slug].default_currency,
        )
        if isinstance(parsed, Rejection):
            rejections.append(parsed)
        else:
            messages.append(parsed)
        if len(messages) + len(rejections) >= BATCH_SIZE:
            self.flush(event.source_slug)

    def flush(self, slug: str) -> None:
        messages, rejections = self.pending[slug]
        if not messages and not rejections:
            return
        outcome = events_ingest(
            source=self.sources[slug],
            endpoint="batch",
            received_at=timezone.now(),
            messages=messages,
            rejections=rejections,
        )
        self.stored += outcome.accepted
        self.duplicates += outcome.duplicates
        self.rejected += len(rejections)
        self.pending[slug] = ([], [])

    def flush_all(self) -> None:
        for slug in self.pending:
            self.flush(slug)


class Command(BaseCommand):
    help = (
        "Create the demo sources and load a seeded cross-channel event history through the "
        "ingestion path, then print fresh credentials to try the platform with."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--members", type=int, default=2000, help="How many customers (default 2000).")
        parser.add_argument(
            "--seed", type=int, default=42, help="Same seed, same events: a re-run stores nothing twice."
        )
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where the service listens, for the banner."
        )
        parser.add_argument(
            "--process",
            action="store_true",
            help="Process the events before the banner (as the worker would) and count the members they made.",
        )
        parser.add_argument(
            "--welcome-file",
            type=Path,
            default=None,
            help="Where to save the banner (default .run/welcome.txt; it holds secrets).",
        )

    def handle(
        self,
        *args: object,
        members: int,
        seed: int,
        url: str,
        welcome_file: Path | str | None,
        process: bool = False,
        **options: object,
    ) -> None:
        if members < 1:
            raise CommandError("--members must be at least 1.")
        url = url.rstrip("/")
        sources, created = self._sources_ensure()
        loyalty_demo_setup()  # before the worker earns the demo's points: tiers apply from the start
        segments_demo_setup()  # before the worker refreshes the demo's members: each lands where it belongs
        # A campaign's spend and saved funnels (its journeys are in the events below).
        insights_funnels_demo_setup(today=timezone.localdate())
        loaded = self._events_load(sources=sources, members=members, seed=seed)
        if process:
            self._events_process()
        counted = _members_count(processed=process)
        credentials = _credentials_issue(web_source=sources[WEB_SOURCE_SLUG])
        total = Event.objects.filter(source__in=sources.values()).count()
        # call_command passes keyword options through without argparse's type conversion.
        path = Path(welcome_file) if welcome_file else Path(settings.BASE_DIR) / ".run" / "welcome.txt"
        banner = _banner(
            url=url,
            members=members,
            seed=seed,
            sources=len(sources),
            created=created,
            loaded=loaded,
            counted=counted,
            total=total,
            credentials=credentials,
            web_source=sources[WEB_SOURCE_SLUG],
            welcome_file=path,
        )
        _write_private(path, banner)
        self.stdout.write(banner)

    def _events_process(self) -> None:
        """Process every waiting event and its follow-ups (profiles, points, segments) as the
        worker does, a time-boxed round at a time."""
        progress = tqdm(desc="Processing", unit=" events", unit_scale=True,
                        file=_ProgressStream(self.stderr), disable=None)  # fmt: skip
        with progress:
            more = True
            while more:
                processed, more = events_process_pending(time_budget=5.0)
                progress.update(processed)
        # Coupons spent at tills and online, then the KPI rollups the board reads (beat keeps
        # them current from here on); by name, as the worker's beat would: the demo sits above
        # the apps, and insights above members.
        loyalty_demo_coupons()
        call_command("compute_insights", stdout=self.stdout)

    def _sources_ensure(self) -> tuple[dict[str, Source], int]:
        """The demo sources by slug, created when missing; how many were created."""
        existing = {
            source.name: source for source in Source.objects.filter(name__in=[d.name for d in DEMO_SOURCES])
        }
        sources: dict[str, Source] = {}
        created = 0
        for demo in DEMO_SOURCES:
            source = existing.get(demo.name)
            if source is None:
                source = source_create(
                    name=demo.name, kind=Channel(demo.kind), store_code=demo.store_code
                ).source
                created += 1
            elif (source.kind, source.store_code) != (demo.kind, demo.store_code):
                raise CommandError(
                    f"A source named {demo.name!r} exists as {source.kind} {source.store_code!r}, "
                    f"not {demo.kind} {demo.store_code!r}; rename it and run the demo again."
                )
            elif demo.slug == WEB_SOURCE_SLUG and not source.enabled:
                # The banner hands out this source's key; a disabled source would refuse it.
                source = source_set_enabled(source=source, enabled=True)
                self.stdout.write(f"Re-enabled the source {demo.name!r}, whose key the demo hands out.")
            sources[demo.slug] = source
        return sources, created

    def _events_load(self, *, sources: dict[str, Source], members: int, seed: int) -> _Loaded:
        """Stream, parse and store the demo events. Each batch commits on its own, as a real
        request would: an interrupted run is completed by the next one (dedupe skips the rest)."""
        loader = _Loader(sources)
        example_user_id = ""
        people_done, person = 0, 0
        progress = tqdm(
            desc="Demo events",
            unit=" events",
            unit_scale=True,
            file=_ProgressStream(self.stderr),
            disable=None,  # no bar when stderr is not a terminal (CI, tests, logs)
        )
        with progress:
            for event in demo_stream(members=members, seed=seed, now=timezone.now()):
                if event.person != person:
                    # The stream's length is only known at its end; people are alike on
                    # average, so the events per person so far give a good running total.
                    people_done, person = people_done + 1, event.person
                    progress.total = max(progress.n, round(progress.n * members / people_done))
                if not example_user_id and event.source_slug == WEB_SOURCE_SLUG:
                    example_user_id = event.message.get("userId", "")
                loader.add(event)
                progress.update()
            # The campaigns' touches and the purchases after them, across channels
            # (members.insights.demo_funnels): the funnel, attribution and ROI pages.
            for event in campaign_stream(members=members, seed=seed, now=timezone.now()):
                loader.add(event)
                progress.update()
            loader.flush_all()
            progress.total = progress.n
            progress.refresh()
        return _Loaded(
            stored=loader.stored,
            duplicates=loader.duplicates,
            rejected=loader.rejected,
            example_user_id=example_user_id or _FALLBACK_USER_ID,
        )


def _members_count(*, processed: bool) -> _Members:
    return _Members(
        active=Member.objects.filter(status=Member.Status.ACTIVE).count(),
        merged=Member.objects.filter(status=Member.Status.MERGED).count(),
        processed=processed,
    )


@transaction.atomic
def _credentials_issue(*, web_source: Source) -> _Credentials:
    """A new web-shop write key, a login with a new password for every role of
    ``DEMO_LOGINS``, and a new token for the demo admin; the previous ones stop working. One
    transaction: never revoked without a replacement."""
    write_key = source_rotate_key(source=web_source).write_key
    passwords = {}
    for login in DEMO_LOGINS:
        user: User = staff_user_ensure(username=login.username, role=login.role)
        passwords[login.username] = secrets.token_urlsafe(12)
        user.set_password(passwords[login.username])
        # A local demo account, shown on the developer's own terminal: the admin may do
        # everything, in /admin/ too.
        user.is_superuser = login.role == Role.ADMIN
        user.save(update_fields=["password", "is_superuser"])
    admin = User.objects.get(username=ADMIN_USERNAME)
    tokens_revoke(user=admin, name=TOKEN_NAME)
    token = token_issue(user=admin, name=TOKEN_NAME).secret
    return _Credentials(write_key=write_key, token=token, passwords=passwords)


def _order_example(user_id: str) -> dict[str, Any]:
    return {
        "userId": user_id,
        "event": "Order Completed",
        "properties": {
            "order_id": "W-CURL-0001",
            "total": 368,
            "revenue": 368,
            "currency": "CNY",
            "products": [
                {
                    "product_id": "P3001",
                    "sku": "SR-50ML",
                    "name": "Hydrating Serum 50 ml",
                    "category": "Beauty/Skincare",
                    "price": 368,
                    "quantity": 1,
                }
            ],
        },
    }


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(path)


def _banner(
    *,
    url: str,
    members: int,
    seed: int,
    sources: int,
    created: int,
    loaded: _Loaded,
    counted: _Members,
    total: int,
    credentials: _Credentials,
    web_source: Source,
    welcome_file: Path,
) -> str:
    rule = "─" * 78
    order = orjson.dumps(_order_example(loaded.example_user_id)).decode()
    rerun = " (a re-run with the same seed adds nothing)" if loaded.stored == 0 else ""
    lines = [
        rule,
        f"  CDP demo ready: {members:,} simulated customers, seed {seed}",
        rule,
        f"  Sources      {sources} demo sources: 3 stores (POS), app, mini-program, web shop; "
        f"{created} created now",
        f"  Events       {loaded.stored:,} stored now, {loaded.duplicates:,} skipped as already stored"
        f"{rerun}, {loaded.rejected:,} rejected",
        f"               {total:,} demo events in all"
        + ("; the worker (started by `make run`) processes them" if not counted.processed else ", processed"),
        _members_line(counted, members),
        f"  Service      {url}/",
        f"  API docs     {url}/api/docs/   (ReDoc: {url}/api/redoc/)",
        f"  Console      {url}/console/   a login for every role, new passwords on every run:",
        *(
            f"               {login.username:<15} password {credentials.passwords[login.username]}   "
            f"({login.sees})"
            for login in DEMO_LOGINS
        ),
        f"  Admin        {url}/admin/   user {ADMIN_USERNAME}",
        f"  Write key    {credentials.write_key}",
        f"               for {web_source.name!r}; new on every run, the previous key no longer works",
        f"  Staff token  {credentials.token}",
        f"               {ADMIN_USERNAME}, role {Role.ADMIN.value}; earlier {TOKEN_NAME!r} tokens revoked",
        f"  Saved to     {_shown_path(welcome_file)} (keep it private: it holds the secrets above)",
        "",
        "  Send an order to the web shop (Segment HTTP Tracking API):",
        f'    curl -sS -u "{credentials.write_key}:" -H "Content-Type: application/json" \\',
        f"      -d '{order}' \\",
        f"      {url}/v1/track",
        "",
        "  List the sources with the staff API:",
        f'    curl -sS -H "Authorization: Bearer {credentials.token}" {url}/api/v1/sources/',
    ]
    return "\n".join(lines)


def _members_line(counted: _Members, customers: int) -> str:
    """How many members the demo's events made, as the database counts them (not the number of
    simulated customers: identity resolution decides who is who)."""
    if not counted.processed:
        return f"  Members      {counted.active:,} in the database so far; more as the worker processes the events"
    line = (
        f"  Members      {counted.active:,} in the database ({counted.merged:,} more were merged into them "
        "when later events linked them)"
    )
    if counted.active > customers:
        line += (
            f"\n               more than the {customers:,} customers: browsing that no login, phone or card "
            "ever linked stays a member of its own"
        )
    return line


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only: it holds a password, a key and a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    if path.is_file():  # never a device (``/dev/null``): chmod as root locked every other user out of it
        path.chmod(0o600)  # ``touch`` leaves an existing file's mode as it was
    path.write_text(text + "\n", encoding="utf-8")
