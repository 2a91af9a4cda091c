"""``rebuild_identity``: the graph rebuilt from the event log equals the incremental one."""

import json
import random
from io import StringIO

import pytest
from django.core.management import call_command

from events.models import Event
from events.pipeline import events_process_pending
from identity.models import EventResolution, Identifier, MergeRecord
from identity.selectors import merge_history_audit
from identity.services import identity_resolve_events
from members.models import Member, MemberTrait
from members.services import members_refresh
from tests.factories.sealed import opened


def snapshot() -> tuple[dict[int, int], set[tuple[str, str, int | None]], dict[int, int | None]]:
    owners: set[tuple[str, str, int | None]]
    merged: dict[int, int | None]
    resolution = dict(EventResolution.objects.values_list("event_id", "member_id"))
    owners = set(Identifier.objects.values_list("type", "value", "member_id"))
    merged = dict(Member.objects.values_list("id", "merged_into_id"))
    return resolution, owners, merged


@pytest.mark.django_db
def test_rebuild_equals_incremental_and_keeps_member_ids():
    # The demo stream: phones in four forms, late POS uploads, a shared iPad, junk ids.
    call_command("demo", "--members", "25", "--seed", "7", "--welcome-file", "/dev/null", stdout=StringIO())
    events = list(Event.objects.all())
    # Resolve incrementally in a shuffled arrival order and small batches: many late events.
    arrival = random.Random(3).sample(events, len(events))
    for start in range(0, len(arrival), 40):
        identity_resolve_events(arrival[start : start + 40])
    members_refresh()
    incremental = snapshot()
    traits = _traits()
    assert traits
    assert len(incremental[0]) == len(events)
    retired = Member.objects.filter(status=Member.Status.MERGED)
    assert retired.exists()
    # every member that stopped being active says why
    assert set(retired.values_list("id", flat=True)) <= set(
        MergeRecord.objects.values_list("absorbed_id", flat=True)
    )
    assert merge_history_audit().truthful

    out = StringIO()
    call_command("rebuild_identity", "--batch-size", "100", stdout=out)

    assert f"from {len(events):,} events" in out.getvalue()
    rebuilt = snapshot()
    assert rebuilt[0] == incremental[0]  # every event with the same member id
    assert rebuilt[1] == incremental[1]  # every identifier with the same owner
    assert _traits() == traits
    active = {pk for pk, survivor in rebuilt[2].items() if survivor is None}
    assert all(survivor in active for survivor in rebuilt[2].values() if survivor is not None)
    # The history is equivalent: the same members merged, each leading where it did, and told truly.
    merged = {pk: survivor for pk, survivor in incremental[2].items() if survivor is not None}
    assert {pk: rebuilt[2][pk] for pk in merged} == merged
    assert set(MergeRecord.objects.values_list("absorbed_id", flat=True)) == {
        pk for pk, survivor in rebuilt[2].items() if survivor is not None
    }
    assert merge_history_audit().truthful


@pytest.mark.django_db
def test_rebuild_on_an_empty_log_is_harmless():
    call_command("rebuild_identity", stdout=StringIO())

    assert not EventResolution.objects.exists()
    events_process_pending()


def _traits() -> set[tuple[int, str, str, int]]:
    """Every member's traits; values as JSON text, since a trait may be an object (consent)."""
    rows = MemberTrait.objects.values_list("member_id", "key", "value", "event_id")
    return {
        (member, key, json.dumps(opened(key, value), sort_keys=True), event)
        for member, key, value, event in rows
    }
