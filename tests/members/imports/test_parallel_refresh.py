"""An imported history refreshed in several processes (``imported_resolve``): what a recompute of
every member gives, on the members a rebuild of the identity graph gives."""

import os
import random
from datetime import UTC, datetime, timedelta

import pytest

from cdp.vault import trait_open
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


def _note_workers(monkeypatch, module, name, path, stage):
    wrapped = getattr(module, name)

    def noted(*args, **kwargs):
        done = wrapped(*args, **kwargs)
        if done:
            with path.open("a") as notes:
                notes.write(f"{stage} {os.getpid()}\n")
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
    _note_workers(monkeypatch, members_services, "members_refresh_batch", workers, "refresh")
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
