"""Everything the pipeline computes from the event log, as plain values, to compare two ways of
reaching it (incremental with failures and replays against a rebuild from the log)."""

from collections import defaultdict
from collections.abc import Iterable

import orjson

from identity.models import EventResolution, Identifier
from members.loyalty.models import PointsAccount, PointsEntry, TierChange
from members.models import ORDER_FIELDS, Member, MemberAggregate, MemberOrder, MemberTrait
from members.segments.models import MemberTag, SegmentMember
from tests.factories.sealed import opened

_AGGREGATE_FIELDS = [f.attname for f in MemberAggregate._meta.concrete_fields if f.attname != "computed_at"]


def computed_state() -> dict[str, object]:
    """Members and their resolution, identifiers, traits, orders, figures, points (net per
    cause: a ledger reaches a sum by appending corrections), accounts, tiers, tags and
    segments."""
    points: dict[tuple[int, str], int] = defaultdict(int)
    for member_id, cause, amount in PointsEntry.objects.values_list("member_id", "cause_key", "points"):
        points[member_id, cause] += amount
    return {
        "members": set(Member.objects.values_list("id", "status", "merged_into_id")),
        "resolution": set(EventResolution.objects.values_list("event_id", "member_id")),
        "identifiers": set(Identifier.objects.values_list("type", "value", "member_id")),
        "traits": _rows(  # sealed values differ at every write (a fresh nonce): compared opened
            (member, key, opened(key, value), *rest)
            for member, key, value, *rest in MemberTrait.objects.values_list(
                "member_id", "key", "value", "observed_at", "channel", "event_id"
            )
        ),
        "orders": _rows(MemberOrder.objects.values_list("member_id", *ORDER_FIELDS)),
        "aggregates": _rows(MemberAggregate.objects.values_list(*_AGGREGATE_FIELDS)),
        "points": {key: amount for key, amount in points.items() if amount},
        "accounts": set(
            PointsAccount.objects.values_list("member_id", "balance", "tier", "tier_since", "next_expiry_at")
        ),
        "tier_changes": set(TierChange.objects.values_list("member_id", "from_tier", "to_tier", "at")),
        "tags": set(MemberTag.objects.values_list("member_id", "tag__key")),
        "segments": set(SegmentMember.objects.values_list("member_id", "segment__key")),
    }


def _rows(rows: Iterable[tuple]) -> set[tuple]:
    """Rows as a set, JSON values (traits, the stores visited) as canonical text."""
    return {
        tuple(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) if isinstance(v, dict | list) else v for v in row)
        for row in rows
    }
