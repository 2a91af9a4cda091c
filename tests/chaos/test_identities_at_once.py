"""Faults with figures (``make chaos``; a short run in ``make test``): several workers resolve
overlapping identities at once. Two streams post orders of a few people, each order naming
some of its person's identifiers (an anonymous id alone, with the email, the user id with an
anonymous id or the email), so that batches claimed at the same moment by the four pool
processes of two Procfile workers link the same identities. No deadlock may surface
(PostgreSQL's own count, ``pg_stat_database.deadlocks``: a deadlock retried silently counts
too), each person ends as exactly one member and each member is one person, no identifier is
lost, and the pipeline figures hold (nothing lost, nothing doubled)."""

import itertools
import random
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial

import pytest
from django.db import connection

from identity.identifiers import IdentifierType
from identity.models import EventResolution, Identifier, Member
from tests.chaos.figures import drained, pipeline_figures
from tests.chaos.harness import RECORDING_PIPELINE
from tests.events.test_worker_integration import Stream, broker, seen_table
from tests.factories import SourceFactory
from tests.processes import CeleryProcess, CeleryWorker, wait_for

__all__ = ["broker", "seen_table"]  # fixtures, used by name

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PEOPLE = 30
ANONYMOUS_IDS_EACH = 4
#: The identifiers an order names: an anonymous id alone, with the email, the user id with an
#: anonymous id, or with the email.
SHAPES = [("anonymous",), ("anonymous", "email"), ("user", "anonymous"), ("user", "email")]


def anonymous_id(person: int, device: int) -> str:
    return f"anon-{person}-{device}"


def user_id(person: int) -> str:
    return f"user-{person}"


class OverlappingIdentities(Stream):
    """Posts batches of five orders of random people, each naming two of its person's
    identifiers in one of four shapes; remembers the identifiers each message named."""

    counter = itertools.count()

    def __init__(self, server_url: str, write_key: str, *, seed: int) -> None:
        super().__init__(server_url, write_key)
        self.random = random.Random(seed)
        self.named: dict[str, tuple[str, ...]] = {}

    def message(self) -> dict:
        person = self.random.randrange(PEOPLE)
        values = {
            "anonymous": anonymous_id(person, self.random.randrange(ANONYMOUS_IDS_EACH)),
            "user": user_id(person),
            "email": f"person{person}@example.com",
        }
        names = self.random.choice(SHAPES)
        message_id = str(uuid.uuid4())
        self.named[message_id] = tuple(f"{name}:{values[name]}" for name in names)
        return {
            "type": "track",
            "event": "Order Completed",
            "messageId": message_id,
            # As an SDK stamps it: each event after the last (an event older than its member's
            # latest is a late one, and re-resolves the member's whole component).
            "timestamp": datetime.now(UTC).isoformat(),
            "properties": {"order_id": f"o-{next(self.counter)}", "total": 100, "currency": "CNY"},
            **({"userId": values["user"]} if "user" in names else {}),
            **({"anonymousId": values["anonymous"]} if "anonymous" in names else {}),
            **({"context": {"traits": {"email": values["email"]}}} if "email" in names else {}),
        }

    def orders(self) -> list[dict]:
        return [self.message() for _ in range(5)]


def is_ready(worker: CeleryProcess) -> bool:
    return "ready." in worker.output()


def deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def components(groups: Iterable[tuple[str, ...]]) -> dict[str, str]:
    """Each identifier's component (named by one of its identifiers) in the graph whose edges
    join the identifiers named together."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for group in groups:
        for other in group[1:]:
            parent[root(other)] = root(group[0])
        root(group[0])
    return {node: root(node) for node in parent}


def surviving(member_id: int, merged_into: dict[int, int | None]) -> int:
    while (survivor := merged_into[member_id]) is not None:
        member_id = survivor
    return member_id


@pytest.mark.parametrize(
    "seconds", [pytest.param(60, marks=pytest.mark.slow, id="60s"), pytest.param(6, id="6s")]
)
def test_workers_resolving_overlapping_identities_at_once_never_deadlock_nor_duplicate_a_member(
    live_server, broker, tmp_path, seen_table, seconds
):
    environment = {"EVENT_PIPELINE_STAGES": RECORDING_PIPELINE, "EVENT_PIPELINE_BATCH_SIZE": "10"}
    database = connection.settings_dict["NAME"]
    (tmp_path / "second").mkdir()
    first = CeleryWorker(broker_url=broker.url, database=database, workdir=tmp_path, extra_env=environment)
    second = CeleryProcess(
        "worker", broker_url=broker.url, database=database, workdir=tmp_path / "second", extra_env=environment
    )
    write_key = SourceFactory().write_key
    streams = [OverlappingIdentities(live_server.url, write_key, seed=seed) for seed in (1, 2)]
    deadlocks_before = deadlocks()
    first.start()
    second.start()
    try:
        for worker in (first.worker, second):
            assert wait_for(partial(is_ready, worker), timeout=60), worker.output()
        for stream in streams:
            stream.start()
        time.sleep(seconds)
        for stream in streams:
            stream.stop()
        stopped = time.monotonic()
        # Every stream's worth of events resolved under one lock: more time for a longer stream.
        assert wait_for(lambda: drained(connection), timeout=60 + 6 * seconds, interval=0.5), first.output()
        drained_after = time.monotonic() - stopped
    finally:
        for stream in streams:
            stream.stop()
        second.stop()
        first.stop()
    deadlocked = deadlocks() - deadlocks_before

    accepted = [message_id for stream in streams for message_id in stream.accepted]
    with connection.cursor() as cursor:
        figures = pipeline_figures(
            cursor,
            fault=f"identities-at-once-{seconds}s",
            sent=sum(stream.batches for stream in streams) * 5,
            accepted=accepted,
            seen_table=seen_table,
        )
    # Who each event's person is by what was sent: identifiers named together are one person
    # (a component of the graph they draw); each must end as one member, each member one person.
    named = {message_id: stream.named[message_id] for stream in streams for message_id in stream.accepted}
    person = components(named.values())
    merged_into = dict(Member.objects.values_list("pk", "merged_into"))
    members_of: dict[str, set[int]] = {}
    for message_id, member_id in EventResolution.objects.values_list("event__message_id", "member_id"):
        members_of.setdefault(person[named[message_id][0]], set()).add(surviving(member_id, merged_into))
    split = sum(len(members) - 1 for members in members_of.values())  # a person as two members
    people_of_member: dict[int, set[str]] = {}
    for someone, members in members_of.items():
        for member in members:
            people_of_member.setdefault(member, set()).add(someone)
    fused = sum(len(people) - 1 for people in people_of_member.values())  # two people as one member
    # Every user id and anonymous id sent is known, owned by its person's member.
    owners = dict(
        Identifier.objects.filter(type__in=[IdentifierType.USER_ID, IdentifierType.ANONYMOUS_ID]).values_list(
            "value", "member_id"
        )
    )
    lost_identifiers = sum(
        1
        for identifier in person
        if not identifier.startswith("email:")
        and (
            owners.get(identifier.split(":", 1)[1]) is None
            or surviving(owners[identifier.split(":", 1)[1]], merged_into)
            not in members_of.get(person[identifier], set())
        )
    )
    figures.report(
        f"{seconds} s, 2 workers x 2 processes, identities {len(set(person.values()))}, members "
        f"{len(people_of_member)}, drained {drained_after:.0f} s after the streams stopped, "
        f"deadlocks {deadlocked}, a person split {split}, people fused {fused}, identifiers lost {lost_identifiers}"
    )
    assert not any(stream.failures for stream in streams)
    assert figures.stored == figures.accepted == figures.sent
    assert (figures.lost, figures.doubled) == (0, 0)
    assert deadlocked == 0
    assert (split, fused, lost_identifiers) == (0, 0, 0)
    assert len(people_of_member) == len(members_of) == len(set(person.values()))
