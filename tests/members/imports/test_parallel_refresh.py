"""An imported history refreshed in several processes (``imported_resolve``): what a recompute of
every member gives, on the members a rebuild of the identity graph gives."""

import os
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from cdp.vault import trait_open
from events import pipeline as events_pipeline
from events import services as events_services
from events.models import PendingEvent
from identity.models import EventResolution, Identifier
from identity.services import identity_rebuild
from members import services as members_services
from members.imports.services import imported_resolve
from members.loyalty.models import PointsAccount, PointsEntry
from members.models import DirtyMark, Member, MemberAggregate, MemberOrder, MemberTrait
from members.segments.models import Segment, SegmentMember
from members.services import members_rebuild
from tests.members.imports.helpers import csv_file, run_import

MEMBERS = 60
ORDERS = 300


def _files(tmp_path):
    rng = random.Random(3)
    t0 = datetime(2023, 1, 1, tzinfo=UTC)
    members = [
        {"member_id": f"M{i}", "phone": f"1390000{i:04d}", "member_card": f"C{i}", "city": rng.choice(["上海", "北京"]),
         "registered_at": (t0 + timedelta(days=rng.randrange(300))).isoformat(),
         "consent.marketing_sms": rng.choice(["true", "false", ""])}
        for i in range(MEMBERS)
    ]  # fmt: skip
    orders = [
        {"order_id": f"O{n}", "member_id": f"M{rng.randrange(MEMBERS)}", "channel": "pos", "store": "S1",
         "total": str(rng.choice([19.9, 88, 399])), "currency": "CNY",
         "completed_at": (t0 + timedelta(days=rng.randrange(400))).isoformat()}
        for n in range(ORDERS)
    ]  # fmt: skip
    return csv_file(tmp_path / "members.csv", members), csv_file(tmp_path / "orders.csv", orders)


def _note_workers(monkeypatch, module, name, path, stage, pause=0.0):
    """``pause``: seconds each call that did work takes longer (so that one process cannot take
    every batch before the other starts)."""
    wrapped = getattr(module, name)

    def noted(*args, **kwargs):
        done = wrapped(*args, **kwargs)
        if done:
            with path.open("a") as notes:
                notes.write(f"{stage} {os.getpid()}\n")
            time.sleep(pause)
        return done

    monkeypatch.setattr(module, name, noted)


def _graph():
    return (
        sorted(Identifier.objects.values_list("type", "value", "member_id")),
        sorted(EventResolution.objects.values_list("event_id", "member_id")),
        sorted(Member.objects.values_list("id", "status", "merged_into_id")),
    )


def _computed():
    return (
        sorted(
            tuple(sorted((k, str(v)) for k, v in row.items() if k != "computed_at"))
            for row in MemberAggregate.objects.values()
        ),
        sorted(MemberOrder.objects.values_list("member_id", "order_id", "total", "placed_at")),
        sorted(  # sealed afresh by each write: compared opened
            (member_id, key, trait_open(key, value))
            for member_id, key, value in MemberTrait.objects.values_list("member_id", "key", "value")
        ),
        sorted(PointsEntry.objects.values_list("member_id", "key", "points")),
        sorted(PointsAccount.objects.values_list("member_id", "balance", "tier")),
        sorted(SegmentMember.objects.values_list("segment__key", "member_id")),
    )


@pytest.mark.django_db(transaction=True)
def test_a_history_refreshed_in_two_processes_is_what_a_rebuild_gives(tmp_path, settings, monkeypatch):
    settings.MEMBER_REFRESH_BATCH_SIZE = 7  # many batches, for both processes to take some
    # The backlog waits for ``imported_resolve``, as with the workers stopped (tests run the
    # pipeline's nudge eagerly, which would process each batch as it commits).
    monkeypatch.setattr(events_services, "process_pending_nudge", lambda: None)
    workers = tmp_path / "workers"  # which processes did the work (forked: they append here)
    # The refresh starts beside the resolution (``pipeline_drain_beside``): its process could
    # take every batch before the resolving one is done, but for a pause after each.
    _note_workers(monkeypatch, members_services, "members_refresh_batch", workers, "refresh", pause=0.05)
    Segment.objects.create(
        key="spend-500",
        name="spend-500",
        kind="dynamic",
        rule={"aggregate": "spend", "op": "gte", "value": 500},
    )
    members_file, orders_file = _files(tmp_path)
    run_import("members", members_file)
    run_import("orders", orders_file)

    resolved, refreshed = imported_resolve(processes=2)

    assert resolved >= MEMBERS + ORDERS
    done_by = [line.split() for line in workers.read_text().splitlines()]
    assert len({pid for what, pid in done_by if what == "refresh"}) == 2
    assert refreshed >= MEMBERS  # a member marked again meanwhile is taken again, and found settled
    assert not PendingEvent.objects.exists()
    assert not DirtyMark.objects.exists()
    assert Member.objects.filter(status="active").count() == MEMBERS
    graph, parallel = _graph(), _computed()
    assert sum(orders for orders in MemberAggregate.objects.values_list("orders", flat=True)) == ORDERS
    assert SegmentMember.objects.exists()
    identity_rebuild()
    assert _graph() == graph
    members_rebuild()
    assert _computed() == parallel


@pytest.mark.django_db(transaction=True)
def test_members_are_refreshed_while_the_backlog_is_still_resolving(tmp_path, settings, monkeypatch):
    """Taken a member at a time, the backlog's refresh runs beside its resolution (the second
    core is not idle while one process holds the identity lock): a member whose batch committed
    is refreshed before the last batch is resolved; the outcome is still what a rebuild gives."""
    settings.MEMBER_REFRESH_BATCH_SIZE = 7
    monkeypatch.setattr(events_services, "process_pending_nudge", lambda: None)
    notes = tmp_path / "notes"
    notes.touch()
    _note_workers(monkeypatch, members_services, "members_refresh_batch", notes, "refresh")
    resolving = events_pipeline._process_ids

    def resolve_then_wait_for_a_refresh(event_ids):
        done = resolving(event_ids)
        with notes.open("a") as found:
            found.write(f"resolve {os.getpid()}\n")
        # The next batch waits (at most 10 s) for a refresh: one only after the whole
        # backlog (as before) never comes, and the test fails.
        deadline = time.monotonic() + 10
        while "refresh" not in notes.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        return done

    monkeypatch.setattr(events_pipeline, "_process_ids", resolve_then_wait_for_a_refresh)
    members_file, orders_file = _files(tmp_path)
    run_import("members", members_file)
    run_import("orders", orders_file)

    resolved, refreshed = imported_resolve(processes=2, batch_size=50)

    lines = [line.split() for line in notes.read_text().splitlines()]
    resolvers = {pid for what, pid in lines if what == "resolve"}
    last_resolve = max(n for n, (what, _) in enumerate(lines) if what == "resolve")
    assert len(resolvers) == 1
    assert any(what == "refresh" and pid not in resolvers for what, pid in lines[:last_resolve])
    assert resolved >= MEMBERS + ORDERS
    assert refreshed >= MEMBERS
    assert not PendingEvent.objects.exists()
    assert not DirtyMark.objects.exists()
    graph, parallel = _graph(), _computed()
    assert sum(orders for orders in MemberAggregate.objects.values_list("orders", flat=True)) == ORDERS
    identity_rebuild()
    assert _graph() == graph
    members_rebuild()
    assert _computed() == parallel
