"""Reads of the members app: find members by any identifier, the 360 view, the timeline.

Each read is a bounded number of queries whatever the member's size: the 360 view is nine,
the timeline one per page.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, F, Max, Model, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from cdp.scopes import UNSCOPED, Scope
from cdp.vault import name_search_index, trait_open
from events.models import Event
from events.selectors import source_names
from identity.identifiers import BlockedIdentifier, InvalidIdentifier
from identity.models import EventResolution
from identity.selectors import (
    HeldIdentifier,
    HistoryEntry,
    identifier_lookup_values,
    member_history,
    member_identifiers,
    members_contacts,
    members_holding,
)
from members.aggregates import CHANNELS, ZERO
from members.loyalty.models import PointsAccount, Tier
from members.models import ORDER_FIELDS, Member, MemberAggregate, MemberOrder, MemberTrait
from members.segments.models import MemberTag, Segment, SegmentMember, Tag, TagChange

#: What staff can look a member up by: every built-in identifier type, and an order number.
LOOKUP_FIELDS = (
    "phone", "email", "member_card", "user_id", "anonymous_id", "device_id",
    "wechat_unionid", "wechat_openid", "order_id",
)  # fmt: skip
#: A result line's contact fields: the member's phone and email identifiers (normalized: E.164,
#: lower case), never the traits as typed, which may hold a till's placeholder ("000000").
CONTACT_FIELDS = ("phone", "email")
_USERNAME = get_user_model().USERNAME_FIELD
RECENT_ORDERS = 10
ModelT = TypeVar("ModelT", bound=Model)


def member_resolve(*, member_id: int) -> Member | None:
    """The active member behind an id, following a merge: an id absorbed by a merge leads to
    its survivor, so ids that CRM staff or marketing tools stored keep working; an erased
    member (and an id merged into one) leads nowhere. Its figures (``aggregate``) and points
    come with it. One query."""
    found = _member_read(member_id)
    return found[0] if found is not None else None


def _columns(model: type[Model], alias: str) -> str:
    return ", ".join(f"{alias}.{field.column}" for field in model._meta.concrete_fields)


#: What the 360 view reads of the member itself, in one prepared statement: the member (an
#: absorbed id leads to its survivor), its figures, its points and their tier. Built once: the
#: ORM took about 1 ms of CPU to compile this read on every view (docs/benchmarks.md).
_JOINED = (Member, MemberAggregate, PointsAccount, Tier)
_MEMBER_READ = (
    f"SELECT {_columns(Member, 'm')}, {_columns(MemberAggregate, 'a')}, "  # noqa: S608 - names from the models
    f"{_columns(PointsAccount, 'p')}, {_columns(Tier, 't')} "
    f"FROM {Member._meta.db_table} AS m "
    f"LEFT JOIN {MemberAggregate._meta.db_table} AS a ON a.member_id = m.id "
    f"LEFT JOIN {PointsAccount._meta.db_table} AS p ON p.member_id = m.id "
    f"LEFT JOIN {Tier._meta.db_table} AS t ON t.key = p.tier "
    f"WHERE m.id IN (%s, (SELECT merged_into_id FROM {Member._meta.db_table} WHERE id = %s)) "
    "AND m.status = %s ORDER BY m.id LIMIT 1"
)


def _instance(model: type[ModelT], values: Sequence[Any]) -> ModelT | None:
    """A model read from its columns of a joined row (None when its primary key is null: no row
    joined); as the ORM makes it (``from_db``), with the fields' own conversions."""
    fields = model._meta.concrete_fields
    if values[[f.primary_key for f in fields].index(True)] is None:
        return None
    converted = list(values)
    for index, field in enumerate(fields):
        for converter in field.get_db_converters(connection):
            converted[index] = converter(converted[index], field, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _member_read(member_id: int) -> tuple[Member, Tier | None] | None:
    """``member_resolve``'s member, with its points' tier."""
    with connection.cursor() as cursor:
        cursor.execute(_MEMBER_READ, [member_id, member_id, Member.Status.ACTIVE])
        row = cursor.fetchone()
    if row is None:
        return None
    parts, start = [], 0
    for model in _JOINED:
        width = len(model._meta.concrete_fields)
        parts.append(_instance(model, row[start : start + width]))
        start += width
    member, aggregate, points, tier = parts
    assert isinstance(member, Member)
    # As select_related caches them: member.aggregate and member.points, None when there is none.
    Member._meta.get_field("aggregate").set_cached_value(member, aggregate)
    Member._meta.get_field("points").set_cached_value(member, points)
    return member, tier if isinstance(tier, Tier) else None


# --- scope (cdp.scopes): what a store's or a channel's staff may see ---------------------------


def _within(scope: Scope) -> QuerySet[EventResolution]:
    """The resolutions of events within the scope (an order is an event)."""
    rows = EventResolution.objects.all()
    if scope.stores is not None:
        rows = rows.filter(event__store_code__in=sorted(scope.stores))
    if scope.channels is not None:
        rows = rows.filter(event__channel__in=sorted(scope.channels))
    return rows


def seen_within(scope: Scope, member: str = "pk") -> Exists:
    """A filter: the member (the outer query's ``member`` column) has an event within the scope."""
    return Exists(_within(scope).filter(member_id=OuterRef(member)))


def members_in_scope(member_ids: Iterable[int], scope: Scope) -> list[int]:
    """Those of ``member_ids`` seen within ``scope``, lowest first (all of them when unscoped).
    One query."""
    ids = sorted(set(member_ids))
    if scope.unrestricted or not ids:
        return ids
    return sorted(Member.objects.filter(pk__in=ids).filter(seen_within(scope)).values_list("pk", flat=True))


def member_visible(*, member_id: int, scope: Scope) -> Member | None:
    """``member_resolve``, for a user of ``scope``: None for a member seen nowhere within it,
    as for an unknown one (a scoped user cannot tell the two apart)."""
    member = member_resolve(member_id=member_id)
    if member is None or scope.unrestricted:
        return member
    return member if members_in_scope([member.pk], scope) else None


def events_in_scope(events: QuerySet[Event], scope: Scope) -> QuerySet[Event]:
    if scope.stores is not None:
        events = events.filter(store_code__in=sorted(scope.stores))
    if scope.channels is not None:
        events = events.filter(channel__in=sorted(scope.channels))
    return events


def _orders_in_scope(orders: QuerySet[MemberOrder], scope: Scope) -> QuerySet[MemberOrder]:
    if scope.stores is not None:
        orders = orders.filter(store_code__in=sorted(scope.stores))
    if scope.channels is not None:
        orders = orders.filter(channel__in=sorted(scope.channels))
    return orders


def members_find(*, field: str, value: str, scope: Scope = UNSCOPED) -> list[int]:
    """Ids of the active members an identifier (or an order number within the scope) leads
    to, lowest first, those seen within ``scope`` only. Raises ``InvalidIdentifier`` or
    ``BlockedIdentifier`` for a value that can never match."""
    if field == "order_id":
        orders = _orders_in_scope(MemberOrder.objects.filter(order_id=value.strip()), scope)
        found = set(orders.values_list("member_id", flat=True))
    else:
        found = members_holding(type_=field, values=identifier_lookup_values(field, value))
    return members_in_scope(_active(found), scope)


def members_search(*, text: str, limit: int = 20, scope: Scope = UNSCOPED) -> list[int]:
    """Ids of active members with a name trait (``PRIVACY_NAME_TRAITS``) that is ``text`` or has
    it as a word or, in ideographs, as the family name (in any letter case), within ``scope``.
    Names are sealed at rest: they are found by the blind indexes of their terms
    (``cdp.sealing.name_terms``), one indexed query, never by a part of a word."""
    index = name_search_index(text)
    if index is None:
        return []
    found = MemberTrait.objects.filter(lookup__contains=[index]).exclude(lookup=[])
    if not scope.unrestricted:
        found = found.filter(seen_within(scope, "member_id"))
    ids = found.values_list("member_id", flat=True)[: limit * 2]
    return members_in_scope(_active(set(ids)), scope)[:limit]


def members_search_any(*, text: str, limit: int = 20, scope: Scope = UNSCOPED) -> list[int]:
    """What the console's one search box finds: ``text`` as any identifier (a phone in any
    written form, an email, a member card, a user id, an openid, ...), an order number, or part
    of a name. A few indexed queries."""
    text = text.strip()
    if not text:
        return []
    found: set[int] = set()
    for type_ in LOOKUP_FIELDS:
        if type_ == "order_id" or (type_ == "email") != ("@" in text):
            continue
        try:
            values = identifier_lookup_values(type_, text)
        except (InvalidIdentifier, BlockedIdentifier):
            continue
        found |= members_holding(type_=type_, values=values)
    orders = _orders_in_scope(MemberOrder.objects.filter(order_id=text), scope)
    found |= set(orders.values_list("member_id", flat=True))
    within = members_in_scope(_active(found), scope)
    return sorted(set(within) | set(members_search(text=text, limit=limit, scope=scope)))[:limit]


def _active(member_ids: set[int]) -> list[int]:
    if not member_ids:
        return []
    rows = Member.objects.filter(id__in=member_ids).values_list("id", "merged_into_id")
    return sorted({survivor or pk for pk, survivor in rows})


@dataclass(frozen=True)
class MemberSummary:
    id: int
    name: object  # a trait: text as stated (or anything JSON a source sent)
    phone: str | None  # normalized identifiers
    email: str | None
    orders: int
    spend: Decimal
    currency: str
    last_event_at: datetime | None


def member_summaries(member_ids: list[int], scope: Scope = UNSCOPED) -> list[MemberSummary]:
    """A line per member for a result list: the name trait, the phone and email identifiers
    seen last, the figures (three queries). For a scoped user the figures are those of the
    orders and events within the scope (two more queries), never every store's."""
    names = {
        member_id: trait_open("name", value)
        for member_id, value in MemberTrait.objects.filter(member_id__in=member_ids, key="name").values_list(
            "member_id", "value"
        )
    }
    contacts = members_contacts(member_ids=member_ids, types=CONTACT_FIELDS)
    figures = (
        {a.member_id: a for a in MemberAggregate.objects.filter(member_id__in=member_ids)}
        if scope.unrestricted
        else _figures_within(member_ids, scope)
    )
    return [
        MemberSummary(
            id=member_id,
            name=names.get(member_id),
            phone=contacts.get(member_id, {}).get("phone"),
            email=contacts.get(member_id, {}).get("email"),
            orders=figures[member_id].orders if member_id in figures else 0,
            spend=figures[member_id].spend if member_id in figures else ZERO,
            currency=figures[member_id].currency if member_id in figures else "",
            last_event_at=figures[member_id].last_event_at if member_id in figures else None,
        )
        for member_id in member_ids
    ]


@dataclass(frozen=True)
class _Figures:
    orders: int
    spend: Decimal
    currency: str
    last_event_at: datetime | None


def _figures_within(member_ids: list[int], scope: Scope) -> dict[int, _Figures]:
    """Orders, net spend (in the platform's currency) and the last event of each member,
    counting only what happened within ``scope``."""
    currency: str = settings.CDP_CURRENCY
    orders = (
        _orders_in_scope(MemberOrder.objects.filter(member_id__in=member_ids, placed_at__isnull=False), scope)
        .values("member_id")
        .annotate(
            count=Count("id"),
            spend=Coalesce(Sum(F("total") - F("refunded"), filter=Q(currency=currency)), ZERO),
        )
    )
    by_member = {row["member_id"]: (row["count"], row["spend"]) for row in orders}
    last = dict(
        _within(scope)
        .filter(member_id__in=member_ids)
        .values("member_id")
        .annotate(last=Max("event__timestamp"))
        .values_list("member_id", "last")
    )
    return {
        member_id: _Figures(*by_member.get(member_id, (0, ZERO)), currency, last.get(member_id))
        for member_id in member_ids
        if member_id in by_member or member_id in last
    }


@dataclass(frozen=True)
class TraitValue:
    key: str
    value: object
    observed_at: datetime
    channel: str
    source: str


@dataclass(frozen=True)
class MonthlySpend:
    month: str  # YYYY-MM
    by_channel: dict[str, Decimal]


@dataclass(frozen=True)
class TagHeld:
    key: str
    name: str
    kind: str
    added_at: datetime
    added_by: str | None  # the staff user who added a manual tag


@dataclass(frozen=True)
class SegmentIn:
    key: str
    name: str
    entered_at: datetime


@dataclass(frozen=True)
class GroupHeld:
    """A group the member belongs to (from their group calls), with the group's traits."""

    group_id: str
    traits: dict
    first_call_at: datetime
    last_call_at: datetime


@dataclass
class MemberProfile:
    member: Member
    requested_id: int
    identifiers: list[HeldIdentifier]
    traits: list[TraitValue]
    aggregate: MemberAggregate | None
    recent_orders: list[MemberOrder]
    spend_by_month: list[MonthlySpend]
    history: list[HistoryEntry]
    points: PointsAccount | None
    tier: Tier | None
    tags: list[TagHeld]
    segments: list[SegmentIn]
    groups: list[GroupHeld]

    @property
    def resolved_from(self) -> int | None:
        """The id asked for, when a merge made it lead to this member."""
        return self.requested_id if self.requested_id != self.member.pk else None


def member_profile(*, member_id: int, scope: Scope = UNSCOPED) -> MemberProfile | None:
    """The 360 view of a member (an absorbed id gives its survivor's), or None if unknown or
    not seen within ``scope``. A scoped user gets the orders within the scope only, and no
    figures (they add up every store and channel)."""
    found = _member_read(member_id)
    if found is None:
        return None
    member, tier = found
    if not scope.unrestricted and not members_in_scope([member.pk], scope):
        return None  # as member_visible: seen nowhere within the scope
    # Plain SQL: at one member these cost far less in PostgreSQL than building them in the ORM.
    with connection.cursor() as cursor:
        cursor.execute(_TRAITS_OF_MEMBER, [member.pk])
        traits = cursor.fetchall()
        cursor.execute(_ORDERS_OF_MEMBER, [member.pk])
        orders = [
            MemberOrder(member_id=member.pk, **dict(zip(ORDER_FIELDS, row, strict=True))) for row in cursor
        ]
    orders = [o for o in orders if scope.allows(store_code=o.store_code, channel=o.channel)]
    sources = source_names(source_id for *_, source_id in traits)
    points = getattr(member, "points", None)  # None until the member earned or was refreshed
    identifiers = member_identifiers(member_id=member.pk)
    return MemberProfile(
        member=member,
        requested_id=member_id,
        identifiers=identifiers,
        traits=[
            TraitValue(key, shown, observed_at, channel, sources.get(source_id, ""))
            for key, value, observed_at, channel, source_id in traits
            # jsonb arrives as text, as Django's JSONField reads it
            if (shown := trait_shown(key, trait_open(key, orjson.loads(value)))) is not None
        ],
        # None until the refresh has run, and for a scoped user
        aggregate=getattr(member, "aggregate", None) if scope.unrestricted else None,
        recent_orders=[o for o in orders if o.placed_at is not None][:RECENT_ORDERS],
        spend_by_month=spend_by_month(orders),
        history=member_history(member_id=member.pk, held=identifiers),
        points=points,
        tier=tier,
        tags=member_tags(member_id=member.pk),
        segments=member_segments(member_id=member.pk),
        groups=member_groups(member_id=member.pk),
    )


def member_groups(*, member_id: int) -> list[GroupHeld]:
    """The groups a member belongs to, latest call first (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_GROUPS_OF_MEMBER, [member_id])
        # jsonb arrives as text, as Django's JSONField reads it
        return [
            GroupHeld(group_id, orjson.loads(traits), first, last) for group_id, traits, first, last in cursor
        ]


def trait_shown(key: str, value: object) -> object:
    """A trait as staff see it: as the customer stated it, except a phone or email that is no
    identifier at all (a till's ``000000``, ``n/a``, a malformed number), which is None: a
    placeholder is never shown as a phone. The normalized forms are the member's identifiers."""
    if key not in CONTACT_FIELDS or value is None:
        return value
    try:
        identifier_lookup_values(key, value if isinstance(value, str) else str(value))
    except (InvalidIdentifier, BlockedIdentifier):
        return None
    return value


def member_tags(*, member_id: int) -> list[TagHeld]:
    """The tags a member carries, by key (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_TAGS_OF_MEMBER, [member_id])
        return [TagHeld(*row) for row in cursor.fetchall()]


def member_segments(*, member_id: int) -> list[SegmentIn]:
    """The segments a member is in now, by key (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_SEGMENTS_OF_MEMBER, [member_id])
        return [SegmentIn(*row) for row in cursor.fetchall()]


@dataclass(frozen=True)
class TagChangeEntry:
    id: int
    tag: str
    tag_name: str
    action: str
    by: str | None
    at: datetime
    member_id: int  # an absorbed member's id for what happened before its merge


def member_tag_history(*, member_id: int, before: int | None, size: int) -> list[TagChangeEntry]:
    """Tags added to and removed from a member (and the members it absorbed), newest first, a
    keyset page (``before``: the id of the last entry seen). One query."""
    changes = TagChange.objects.filter(Q(member_id=member_id) | Q(member__merged_into_id=member_id))
    if before is not None:
        changes = changes.filter(id__lt=before)
    rows = changes.order_by("-id").values_list(
        "id", "tag__key", "tag__name", "action", f"by__{_USERNAME}", "at", "member_id"
    )[:size]
    return [TagChangeEntry(*row) for row in rows]


_USER_TABLE = get_user_model()._meta.db_table
_USERNAME_COLUMN = get_user_model()._meta.get_field(_USERNAME).column  # type: ignore[union-attr]  # a field, not a relation
# Only the models' table and column names are interpolated.
_TAGS_OF_MEMBER = (
    f"SELECT t.key, t.name, t.kind, mt.added_at, u.{_USERNAME_COLUMN} "  # noqa: S608
    f"FROM {MemberTag._meta.db_table} AS mt JOIN {Tag._meta.db_table} AS t ON t.id = mt.tag_id "
    f"LEFT JOIN {_USER_TABLE} AS u ON u.id = mt.added_by_id WHERE mt.member_id = %s ORDER BY t.key"
)
_SEGMENTS_OF_MEMBER = (
    f"SELECT s.key, s.name, sm.entered_at FROM {SegmentMember._meta.db_table} AS sm "  # noqa: S608
    f"JOIN {Segment._meta.db_table} AS s ON s.id = sm.segment_id WHERE sm.member_id = %s ORDER BY s.key"
)
_TRAITS_OF_MEMBER = "SELECT key, value, observed_at, channel, source_id FROM members_membertrait WHERE member_id = %s ORDER BY key"
_GROUPS_OF_MEMBER = (
    "SELECT g.group_id, g.traits, m.first_call_at, m.last_call_at FROM members_groupmembership AS m "
    "JOIN members_group AS g ON g.id = m.group_id WHERE m.member_id = %s "
    "ORDER BY m.last_call_at DESC, g.group_id"
)
_ORDERS_OF_MEMBER = (
    f"SELECT {', '.join(ORDER_FIELDS)} FROM members_memberorder "  # noqa: S608 - field names only
    "WHERE member_id = %s ORDER BY placed_at DESC NULLS LAST, event_id DESC"
)


def member_orders(*, member_id: int) -> list[dict]:
    """Every order of a member (the 360 view shows the recent ones), newest first."""
    with connection.cursor() as cursor:
        cursor.execute(_ORDERS_OF_MEMBER, [member_id])
        return [dict(zip(ORDER_FIELDS, row, strict=True)) for row in cursor.fetchall()]


def spend_by_month(orders: list[MemberOrder]) -> list[MonthlySpend]:
    """Net spend per calendar month (UTC) and channel, oldest first, for the console's chart."""
    months: dict[str, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(CHANNELS, ZERO))
    for order in orders:
        if order.placed_at is None:
            continue
        month = months[f"{order.placed_at:%Y-%m}"]
        month[order.channel] = month.get(order.channel, ZERO) + order.total - order.refunded
    return [MonthlySpend(month, figures) for month, figures in sorted(months.items())]


def member_timeline(
    *, member_id: int, channel: str = "", event: str = "", scope: Scope = UNSCOPED
) -> QuerySet[Event]:
    """The member's events across channels, those within ``scope`` (newest first when
    paginated by the caller)."""
    events = events_in_scope(
        Event.objects.filter(
            id__in=Subquery(EventResolution.objects.filter(member_id=member_id).values("event_id"))
        ),
        scope,
    )
    if channel:
        events = events.filter(channel=channel)
    if event:
        events = events.filter(event=event)
    # Not the context: device, IP address and user agent are not the agent's business.
    return events.only(
        "id",
        "source_id",
        "type",
        "event",
        "name",
        "channel",
        "store_code",
        "timestamp",
        "traits",
        "properties",
    )
