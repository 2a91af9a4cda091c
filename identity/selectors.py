"""Reads of the identity app: who holds an identifier, and a member's identity card."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, Value

from events.models import Channel, Source
from identity.identifiers import IdentifierType, normalize
from identity.models import Identifier, MemberIdentifier, MergeRecord, SplitRecord
from identity.services import normalization_policy
from members.models import Member


def identifier_lookup_values(type_: str, raw: str) -> list[str]:
    """The stored forms ``raw`` can take as an identifier of ``type_``, normalized exactly as
    at ingestion: any written form of a phone finds the member. Raises ``InvalidIdentifier``
    or ``BlockedIdentifier`` for a value that can never match.

    An openid is stored scoped by its mini-program (``<appid>:<openid>``): a bare openid is
    looked for under every mini-program's appid.
    """
    if type_ != IdentifierType.WECHAT_OPENID:
        return [normalize(type_, raw, normalization_policy())]
    value = normalize(type_, raw, normalization_policy())
    if ":" in value:
        return [value]
    appids = (
        Source.objects.filter(kind=Channel.MINI_PROGRAM)
        .exclude(wechat_appid="")
        .values_list("wechat_appid", flat=True)
    )
    return [value, *(f"{appid}:{value}" for appid in sorted(set(appids)))]


def members_holding(*, type_: str, values: list[str]) -> set[int]:
    """Ids of the members holding any of these identifier values (owners, and holders of
    types that never merge). One query."""
    owners = Identifier.objects.filter(type=type_, value__in=values, member__isnull=False).values_list(
        "member_id", flat=True
    )
    holders = MemberIdentifier.objects.filter(
        identifier__type=type_, identifier__value__in=values
    ).values_list("member_id", flat=True)
    return set(owners.union(holders))


@dataclass(frozen=True)
class HeldIdentifier:
    type: str
    value: str
    last_seen_at: datetime | None
    merges: bool  # False: a type that never merges (stored, never used to join members)


def member_identifiers(*, member_id: int) -> list[HeldIdentifier]:
    """Everything a member holds, by type then value (one query)."""
    owned = (
        Identifier.objects.filter(member_id=member_id)
        .annotate(merges=Value(True))
        .values_list("type", "value", "last_seen_at", "merges")
    )
    held = (
        MemberIdentifier.objects.filter(member_id=member_id)
        .annotate(merges=Value(False))
        .values_list("identifier__type", "identifier__value", "identifier__last_seen_at", "merges")
    )
    return sorted(
        (HeldIdentifier(*row) for row in owned.union(held, all=True)), key=lambda i: (i.type, i.value)
    )


@dataclass(frozen=True)
class HistoryEntry:
    kind: str  # "merge" or "split"
    at: datetime
    survivor_id: int | None
    absorbed_id: int | None
    identifiers: list[str]
    cause: str
    event_id: int | None
    staff: str
    reason: str
    resulting_members: list[int]


def member_history(*, member_id: int) -> list[HistoryEntry]:
    """Merges into this member (also into members it absorbed since) and splits of it, newest
    first (three queries, each by index)."""
    # Ids first: an OR with a subquery cannot use the indexes; two index lookups OR-ed can.
    absorbed = list(Member.objects.filter(merged_into_id=member_id).values_list("id", flat=True))
    merges = MergeRecord.objects.filter(
        Q(survivor_id__in=[member_id, *absorbed]) | Q(absorbed_id=member_id)
    ).values_list("created_at", "survivor_id", "absorbed_id", "identifiers", "cause", "event_id")
    splits = SplitRecord.objects.filter(
        Q(member_id=member_id) | Q(resulting_members__contains=[member_id])
    ).values_list("created_at", "member_id", "identifiers", "staff__username", "reason", "resulting_members")
    entries = [
        HistoryEntry("merge", at, survivor, gone, list(identifiers), cause, event_id, "", "", [])
        for at, survivor, gone, identifiers, cause, event_id in merges
    ]
    entries += [
        HistoryEntry(
            "split", at, member, None, list(identifiers), "staff", None, staff or "", reason, list(result)
        )
        for at, member, identifiers, staff, reason, result in splits
    ]
    return sorted(entries, key=lambda e: e.at, reverse=True)


def identifiers_by_type(identifiers: list[HeldIdentifier]) -> dict[str, list[HeldIdentifier]]:
    grouped: dict[str, list[HeldIdentifier]] = defaultdict(list)
    for identifier in identifiers:
        grouped[identifier.type].append(identifier)
    return dict(grouped)
