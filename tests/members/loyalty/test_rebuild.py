"""Points rebuilt from the event log equal the points kept incrementally, on the demo's
history resolved in a shuffled arrival order (late events, merges, replays)."""

import random
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from events.models import Event
from identity.services import identity_resolve_events
from members.loyalty.models import PointsAccount, PointsEntry, TierChange
from members.segments.models import SegmentMember
from members.services import members_refresh


def points_state() -> tuple[dict, dict, set]:
    net: dict[tuple[int, str], int] = {}
    for member, cause, points in PointsEntry.objects.values_list("member_id", "cause_key", "points"):
        net[member, cause] = net.get((member, cause), 0) + points
    accounts = {
        a.member_id: (a.balance, a.tier, a.tier_since, a.next_expiry_at) for a in PointsAccount.objects.all()
    }
    changes = set(TierChange.objects.values_list("member_id", "from_tier", "to_tier", "at"))
    return {k: v for k, v in net.items() if v}, accounts, changes


@pytest.mark.django_db
def test_rebuilt_points_equal_the_incremental_ones():
    call_command("demo", "--members", "25", "--seed", "13", "--welcome-file", "/dev/null", stdout=StringIO())
    events = list(Event.objects.all())
    arrival = random.Random(3).sample(events, len(events))
    for start in range(0, len(arrival), 40):
        identity_resolve_events(arrival[start : start + 40])
        members_refresh()
    incremental = points_state()
    assert any(cause.startswith("reverse:") for _, cause in incremental[0]), "the demo should refund"
    assert any(tier for _, tier, *_ in incremental[1].values()), "the demo should reach tiers"
    rows = PointsEntry.objects.count()
    memberships = set(SegmentMember.objects.values_list("segment__key", "member_id"))
    assert any(key.startswith("lifecycle-") for key, _ in memberships)

    call_command("rebuild_members", stdout=StringIO())
    assert PointsEntry.objects.count() == rows, "a rebuild over a correct ledger writes nothing"
    assert set(SegmentMember.objects.values_list("segment__key", "member_id")) == memberships

    with connection.cursor() as cursor:  # the ledger refuses DELETE; start from nothing
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the deferred floor checks first
        cursor.execute("TRUNCATE members_pointsentry, members_pointsaccount, members_tierchange")
    call_command("rebuild_members", "--points-only", stdout=StringIO())

    assert points_state() == incremental
    # Tags and segments read points and tiers: the command recomputes them too (RFM quintiles
    # included, which the refreshes had none of yet).
    after = set(SegmentMember.objects.values_list("segment__key", "member_id"))
    assert {m for m in after if not m[0].startswith("rfm-")} == memberships
    assert any(key.startswith("rfm-") for key, _ in after)
