"""A member whose refresh fails is parked, never blocks: the refresh batch is bisected down to
the member, the others are refreshed, marks made for it later wait without failing other
batches, and a replay after the fix refreshes it once, reaching what a clean run computes."""

from collections import Counter
from datetime import timedelta
from decimal import InvalidOperation
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from cdp import retries
from cdp.models import AuditEntry
from cdp.roles import Role
from events.models import Event, PendingEvent
from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.services import identity_rebuild
from members import member_events, services
from members.models import DirtyMark, Member, ParkedMember
from members.services import members_rebuild
from tests.factories import EventFactory
from tests.factories.members import MemberFactory
from tests.members.computed import computed_state
from tests.members.test_api import staff_client  # a client holding a role's token

pytestmark = pytest.mark.django_db

REFRESH_BATCH = 10


def owner(event_id: int) -> int:
    member = Member.objects.get(pk=EventResolution.objects.get(event_id=event_id).member_id)
    return member.merged_into_id or member.pk


def another_event_of(member_id: int) -> Event:
    """A new event with the identifiers of one of the member's events: it lands on the member."""
    like = Event.objects.filter(
        pk__in=EventResolution.objects.filter(member_id=member_id).values("event_id"), type="identify"
    ).first() or Event.objects.get(
        pk=EventResolution.objects.filter(member_id=member_id).earliest("pk").event_id
    )
    return EventFactory.create(
        source=like.source, type="track", event="Product Viewed", user_id=like.user_id,
        anonymous_id=like.anonymous_id, traits=like.traits, context=like.context,
        timestamp=like.timestamp + timedelta(minutes=1),
    )  # fmt: skip


def test_a_failing_member_is_parked_the_rest_are_refreshed_and_its_replay_equals_a_clean_run(
    client, monkeypatch
):
    call_command("demo", "--members", "25", "--seed", "7", "--welcome-file", "/dev/null", stdout=StringIO())
    orders = list(
        Event.objects.filter(event="Order Completed").order_by("id").values_list("id", "properties")
    )
    # Three orders whose totals the refresh cannot compute (``total: 1e308`` does that).
    chosen = [orders[2], orders[len(orders) // 2], orders[-3]]
    bad_orders = {properties["order_id"] for _, properties in chosen}
    real_order_event = member_events.order_event

    def unreadable_totals(**kwargs: Any) -> object:
        if kwargs["properties"].get("order_id") in bad_orders:
            raise InvalidOperation([InvalidOperation])
        return real_order_event(**kwargs)

    with monkeypatch.context() as fault, override_settings(MEMBER_REFRESH_BATCH_SIZE=REFRESH_BATCH):
        fault.setattr(member_events, "order_event", unreadable_totals)
        assert events_process_pending(batch_size=50)[1] is False

        owners = {owner(event_id) for event_id, _ in chosen}
        assert len(owners) == 3
        parked = set(ParkedMember.objects.values_list("member_id", flat=True))
        # The members holding the bad orders are parked (and any member absorbed into one of
        # them that was parked before the merge); nobody else.
        absorbed = set(Member.objects.filter(merged_into__in=owners).values_list("id", flat=True))
        assert owners <= parked <= owners | absorbed
        assert set(DirtyMark.objects.values_list("member_id", flat=True)) <= parked  # waiting, not failing
        row = ParkedMember.objects.get(member_id=min(owners))
        assert (row.attempts, row.replayed_at) == (1, None)
        assert row.error.startswith("InvalidOperation")
        assert "unreadable_totals" in row.traceback
        others = {a for a in computed_state()["aggregates"] if a[0] not in parked}
        assert len(others) > 20

        # Listed for admins, counted in health.
        admin = staff_client(Role.ADMIN)
        listed = admin.get("/api/v1/parked-members/").json()["results"]
        assert {r["member_id"] for r in listed} == parked
        assert staff_client(Role.CRM_MANAGER).get("/api/v1/parked-members/").status_code == 403
        health = client.get("/health/").json()
        assert (health["status"], health["parked"]) == ("degraded", {"events": 0, "members": len(parked)})

        # New events for a parked member mark it; the mark waits, and fails no other refresh.
        waiting = min(owners)
        another_event_of(waiting)
        assert events_process_pending(batch_size=50)[1] is False
        assert DirtyMark.objects.filter(member_id=waiting).exists()
        assert set(ParkedMember.objects.values_list("attempts", flat=True)) == {1}
        assert not PendingEvent.objects.exists()

    # Fixed. One replayed through the API (audited), the rest by the command, each once.
    replay = admin.post(f"/api/v1/parked-members/{row.pk}/replay/")
    assert replay.status_code == 200
    assert replay.json() == {"replayed": 1, "member_ids": [row.member_id]}
    assert AuditEntry.objects.get(action="replay_parked").member_ids == [row.member_id]
    assert admin.post(f"/api/v1/parked-members/{row.pk}/replay/").status_code == 404
    call_command("replay_failed", "members", stdout=StringIO())
    call_command("replay_failed", "members", stdout=StringIO())  # nothing left: marks nothing twice

    refreshed: Counter[int] = Counter()
    real_update = services.members_update

    def counting(member_ids: set[int], *rest: set[int]) -> None:
        refreshed.update(member_ids)
        real_update(member_ids, *rest)

    monkeypatch.setattr(services, "members_update", counting)
    assert events_process_pending()[1] is False
    assert {member_id: refreshed[member_id] for member_id in parked} == dict.fromkeys(parked, 1)
    assert not DirtyMark.objects.exists()
    assert not ParkedMember.objects.filter(replayed_at__isnull=True).exists()
    assert client.get("/health/").json()["parked"] == {"events": 0, "members": 0}

    # The others were refreshed all along; everything now equals a clean run from the log.
    incremental = computed_state()
    assert others <= incremental["aggregates"]
    assert {order_id for _, order_id, *_ in incremental["orders"]} >= bad_orders
    monkeypatch.undo()
    identity_rebuild()
    members_rebuild()
    assert computed_state() == incremental


def test_a_transient_database_error_in_the_refresh_is_retried_and_parks_nothing(monkeypatch):
    monkeypatch.setattr(retries, "_BACKOFF_BASE_SECONDS", 0.001)
    EventFactory.create_batch(6)
    real_active_of = services._active_of
    calls: list[set[int]] = []

    def deadlock_once(member_ids: set[int]) -> set[int]:
        calls.append(set(member_ids))
        if len(calls) == 1:
            with connection.cursor() as cursor:
                cursor.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"
                )
        return real_active_of(member_ids)

    monkeypatch.setattr(services, "_active_of", deadlock_once)
    events_process_pending()

    assert len(calls) == 2
    assert calls[0] == calls[1]  # the same batch, again
    assert not ParkedMember.objects.exists()
    assert not DirtyMark.objects.exists()
    assert Member.objects.filter(aggregate__events=1).count() == 6


def test_the_admin_lists_parked_members_and_replays_them(admin_client):
    member = MemberFactory()
    parked = ParkedMember.objects.create(
        member=member, error="InvalidOperation: [<class 'decimal.InvalidOperation'>]", traceback="...",
        first_failed_at=member.created_at, last_failed_at=member.created_at,
    )  # fmt: skip

    listed = admin_client.get("/admin/members/parkedmember/")
    assert listed.status_code == 200
    assert "InvalidOperation" in listed.content.decode()
    assert admin_client.get(f"/admin/members/parkedmember/{parked.pk}/change/").status_code == 200

    admin_client.post("/admin/members/parkedmember/", {"action": "replay", "_selected_action": [parked.pk]})

    assert list(DirtyMark.objects.values_list("member_id", flat=True)) == [member.pk]
    assert not ParkedMember.objects.filter(replayed_at__isnull=True).exists()
    assert AuditEntry.objects.get().member_ids == [member.pk]
