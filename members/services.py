"""Writes of the members app: refresh what is computed from a member's events."""

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import datetime
from functools import cache, partial

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.module_loading import import_string

from cdp.db import binary_parameters_cursor, queue_vacuum_due, rows_delete
from cdp.metrics import REFRESH_MEMBERS, REFRESH_SECONDS
from cdp.retries import database_error_is_transient, transient_retry
from events.commerce import ORDER_EVENTS
from members.aggregates import CHANNELS, Order, OrderEvent, aggregates_of, orders_of
from members.consent.services import ConsentSource, consent_refresh
from members.consent.statements import CONSENT_EVENT, ConsentFact
from members.groups import GroupCall, groups_refresh
from members.incremental import (
    Advance,
    members_advance,
    points_histories,
    points_histories_whole,
    refresh_paths_count,
    refresh_plan,
)
from members.locks import member_refresh_locks, member_refresh_locks_free
from members.loyalty.points import LOYALTY_EVENTS
from members.loyalty.services import points_reconcile, points_refresh
from members.marks import member_changes_accept
from members.member_events import (
    MemberEvent,
    aggregate_row,
    aggregates_upsert,
    events_of,
    loyalty_histories,
    order_events_of,
    orders_insert,
    trait_observations,
    traits_write,
    watermarks_write,
)
from members.models import (
    DirtyMark,
    GroupMembership,
    Member,
    MemberAggregate,
    MemberOrder,
    MemberTrait,
    ParkedMember,
    RefreshWatermark,
)
from members.orders import order_owners_refresh
from members.parking import member_park
from members.segments.evaluate import memberships_refresh
from members.segments.rules.interpret import EventFact, MemberFacts, event_counts_add, event_times_add
from members.segments.selectors import Definitions, definitions_load
from members.segments.webhooks.services import webhooks_nudge
from members.traits import GROUP_CALL, latest_traits

logger = logging.getLogger(__name__)


def members_refresh_batch(*, batch_size: int | None = None) -> int:
    """Take identity's "members changed" rows into the refresh queue (``members.marks``), then
    claim a batch of dirty marks and refresh their members, in one transaction; returns how
    many members it took out of the queue (refreshed, or parked when they failed; 0: nothing
    waiting, or every mark is being refreshed). The pipeline's follow-up and the members
    refresh task run it.

    Runs after resolution committed, in its own transactions, so resolving the next batch never
    waits on computing the last one. Marks are claimed ``FOR UPDATE SKIP LOCKED`` and deleted
    by id: a mark added meanwhile survives for the next refresh. The marks of parked members
    (``members.parking``) are not claimed.

    A transient database error is retried (``cdp.retries``), and raised when it persists (the
    marks stay). Any other failure bisects the batch: its members are refreshed again in
    halves, each in its own transaction, down to the single members that fail, which are
    parked; the happy path pays nothing for it.
    """
    size = batch_size or settings.MEMBER_REFRESH_BATCH_SIZE
    began = time.perf_counter()
    transient_retry(member_changes_accept)
    claimed: list[int] = []
    try:
        done = transient_retry(partial(_refresh, partial(_marks_claim, size), claimed))
    except Exception as exc:
        if database_error_is_transient(exc) or not claimed:
            raise
        done = _refresh_bisect(claimed, exc)
    # The marks are taken from the queue's oldest end, as the pipeline takes events: vacuumed
    # now and then by the refresh itself, the takes do not walk every mark taken before them.
    queue_vacuum_due(DirtyMark._meta.db_table, taken=done, every=settings.MEMBER_REFRESH_QUEUE_VACUUM_EVERY)
    if done:
        elapsed = time.perf_counter() - began
        REFRESH_SECONDS.observe(elapsed)
        REFRESH_MEMBERS.inc(done)
        logger.info("member refresh: %d members in %.3f s", done, elapsed, extra={"members": done})
    return done


def _refresh(claim: Callable[[], list[tuple[int, int, bool]]], claimed: list[int]) -> int:
    """One transaction: claim marks (id, member, made from events), refresh their members,
    delete the marks; ``claimed`` receives the members' ids (to bisect on failure)."""
    with transaction.atomic():
        marks = claim()
        if not marks:
            return 0
        member_ids = member_refresh_locks_free(wanted := {member_id for _, member_id, _ in marks})
        if member_ids:
            # The marks of members another refresh holds stay queued (unlocked when this one
            # commits) for a later batch: waiting for that refresh's whole transaction held up
            # every other member of this batch with them.
            marks = [mark for mark in marks if mark[1] in member_ids]
        else:
            member_ids = wanted  # all of them held: nothing else to do but wait
            member_refresh_locks(member_ids)
        claimed[:] = sorted(member_ids)
        marks += _marks_of(member_ids)  # their later marks (see _marks_of)
        members_update(member_ids, member_ids - {m for _, m, from_events in marks if not from_events})
        rows_delete(DirtyMark, column="id", keys={mark_id for mark_id, _, _ in marks})
    return len(member_ids)


def _marks_claim(size: int) -> list[tuple[int, int, bool]]:
    """The oldest ``size`` marks no other refresh holds, but for parked members'."""
    parked = ParkedMember.objects.filter(member_id=OuterRef("member_id"), replayed_at__isnull=True)
    return list(
        DirtyMark.objects.filter(~Exists(parked))
        .order_by("id")
        .select_for_update(skip_locked=True)
        .values_list("id", "member_id", "from_events")[:size]
    )


def _refresh_bisect(member_ids: list[int], error: Exception) -> int:
    """Refresh these members (whose batch failed with ``error``) in halves, down to the single
    members that fail, and park those; returns how many left the queue. A member whose marks
    another refresh took meanwhile is that refresh's."""
    done = 0
    parts: list[tuple[list[int], Exception | None]] = [(member_ids, error)]  # a stack
    while parts:
        ids, known = parts.pop()
        if known is None:
            try:
                done += transient_retry(partial(_refresh, partial(_marks_of, ids), []))
                continue
            except Exception as exc:
                if database_error_is_transient(exc):
                    raise
                known = exc
        if len(ids) == 1:
            done += transient_retry(partial(member_park, member_id=ids[0], error=known))
            continue
        middle = len(ids) // 2
        parts += [(ids[middle:], None), (ids[:middle], None)]
    return done


def _marks_of(member_ids: Collection[int]) -> list[tuple[int, int, bool]]:
    """These members' marks (id, member, made from events) no other refresh holds, locked.

    A refresh takes the later marks of the members it claims too: it reads each member's
    events as committed after these marks were, so it answers them as well, and under a
    backlog a member marked by several resolution batches is refreshed once, not once per batch.
    """
    with binary_parameters_cursor() as cursor:
        cursor.execute(_MARKS_OF_MEMBERS, [sorted(member_ids)])
        return cursor.fetchall()


def members_refresh() -> int:
    """Refresh every member marked dirty; returns how many refreshes ran."""
    refreshed = 0
    while done := members_refresh_batch():
        refreshed += done
    return refreshed


def members_refresh_pending(*, time_budget: float = 30.0) -> tuple[int, bool]:
    """Refresh batches until nothing is waiting or the time budget is spent; returns (members
    taken out of the queue, whether work may remain)."""
    deadline = time.monotonic() + time_budget
    refreshed = 0
    while done := members_refresh_batch():
        refreshed += done
        if time.monotonic() >= deadline:
            return refreshed, True
    return refreshed, False


def members_rebuild(
    *, batch_size: int = 1000, points_only: bool = False, progress: Callable[[int], None] = lambda done: None
) -> int:
    """Recompute every active member from the event log, a batch per transaction; returns how
    many. Erased members are not recomputed: nothing brings them back. What the incremental refresh keeps current, computed again from scratch.
    ``points_only``: just the points ledger and tiers (after an earning rule was edited),
    reading only the events that earn."""
    recompute = points_recompute if points_only else members_recompute
    done, after = 0, 0
    while True:
        with transaction.atomic():
            batch = set(
                Member.objects.filter(status=Member.Status.ACTIVE, id__gt=after)
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            if not batch:
                break
            member_refresh_locks(batch)
            recompute(batch)
        after = max(batch)
        done += len(batch)
        progress(done)
    with transaction.atomic():
        # Absorbed members keep nothing; erased ones keep their figures (members_recompute).
        retired = Member.objects.filter(status=Member.Status.MERGED).values("id")
        for model in (MemberTrait, MemberOrder, MemberAggregate, GroupMembership, RefreshWatermark):
            model.objects.filter(member_id__in=retired).delete()
    return done


def members_update(member_ids: set[int], events_only: set[int] | frozenset[int] = frozenset()) -> None:
    """Refresh these dirty members (the caller holds their refresh locks): from their new
    events and what is stored where that is exact (``members.incremental``), the others from
    all their events (``members_recompute``). ``events_only``: the members marked only for
    changed events (``DirtyMark.from_events``); those whose stored state already covers every
    event they hold (an earlier refresh read the events this one was marked for) need nothing."""
    erased = _erased_of(member_ids)
    active = _active_of(member_ids - erased)
    definitions = definitions_load()
    plan = refresh_plan(active if settings.MEMBER_REFRESH_INCREMENTAL else set(), definitions)
    unplanned = "unrefreshed" if settings.MEMBER_REFRESH_INCREMENTAL else "off"
    advanced = set(plan.events)
    settled = plan.settled & events_only
    full = member_ids - advanced - settled
    if full - erased or advanced:
        _members_write(full - erased, active - advanced - settled, plan, definitions)
    refresh_paths_count(
        incremental=len(advanced), full=len(full), settled=len(settled),
        reasons=(plan.full_reasons.get(pk, unplanned) for pk in full - erased),
    )  # fmt: skip


def members_recompute(member_ids: set[int]) -> None:
    """Everything computed from these members' events, from their events as they are now:
    traits, consent statements (``members.consent``), groups, orders (those each member owns:
    ``members.orders``) and figures, points and tier, then tags and segments.

    A member absorbed by a merge keeps nothing: its computed state lives on the survivor. An
    erased member (``members.privacy``) is left as its erasure left it: its figures, orders
    and points stay, computed once from what its events were, and nothing is recomputed.
    """
    member_ids = member_ids - _erased_of(member_ids)
    _members_write(member_ids, _active_of(member_ids), Advance(), definitions_load())


def _members_write(recomputed: set[int], active: set[int], plan: Advance, definitions: Definitions) -> None:
    """Write what is computed from events: ``recomputed`` (none erased; of which ``active``
    are active, the others absorbed by a merge) from all their events, ``plan``'s members from
    their new events (``members.incremental``).

    Both paths go through each kind of shared row at once, in the order of ``members.locks``:
    the order rows of both paths' claims, then every points account either writes, then the
    tags and segments. A refresh that took any of them twice (the full path's, then the
    incremental path's) could hold what another waits for while waiting for what it holds."""
    now = timezone.now()
    events = events_of(active, properties_of=definitions.property_events | {CONSENT_EVENT})
    order_events = order_owners_refresh(
        order_events=order_events_of(events) | order_events_of(plan.new_events())
    )
    traits, consent_sources = _traits_write(active, events)
    consents = consent_refresh(member_ids=recomputed, active=active, sources=consent_sources)
    groups_refresh(
        member_ids=recomputed,
        calls=[
            GroupCall(e.member_id, e.group_id, e.at) for e in events if e.type == GROUP_CALL and e.group_id
        ],
    )
    figures = _aggregates_write(active, events, order_events, definitions, now)
    watermarks_write(_covered_by(active, events), only_existing=False)
    retired = recomputed - active
    # Before the points accounts: another refresh may hold these rows (its order claims
    # displaced the member: ``members.orders``) while it waits for those accounts.
    for model in (MemberTrait, MemberOrder, MemberAggregate, RefreshWatermark):
        rows_delete(model, column="member", keys=retired)
    advanced = members_advance(plan, order_events, definitions, now)
    points_refresh(
        histories=loyalty_histories(active, events, order_events), retired=retired,
        new=points_histories(plan, order_events), whole=partial(points_histories_whole, plan),
        now=now, checkpoint=True,
    )  # fmt: skip
    changed = memberships_refresh(
        members=_facts_of(active, events, traits, figures, consents) | advanced, retired=retired, now=now,
        definitions=definitions,
    )  # fmt: skip
    webhooks_nudge(changed)
    for hook in refresh_hooks():
        hook(recomputed | advanced.keys())


@cache
def refresh_hooks() -> list[Callable[[set[int]], None]]:
    """What else wants to know which members a refresh recomputed (``MEMBERS_REFRESH_HOOKS``,
    dotted paths: the KPI rollups' queue). Called in the refresh's transaction, after its
    writes; named in settings so that members never imports the apps above it."""
    return [import_string(path) for path in settings.MEMBERS_REFRESH_HOOKS]


def _active_of(member_ids: set[int]) -> set[int]:
    """Which of these members are active (one index probe per id: a Django ``IN`` list of a
    few hundred literals was parsed and planned afresh at every refresh)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_ACTIVE_OF, [sorted(member_ids), Member.Status.ACTIVE.value])
        return {row[0] for row in cursor.fetchall()}


def _erased_of(member_ids: set[int]) -> set[int]:
    """Which of these members are erased (one index probe per id)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_ACTIVE_OF, [sorted(member_ids), Member.Status.ERASED.value])
        return {row[0] for row in cursor.fetchall()}


def points_recompute(member_ids: set[int]) -> None:
    """The points ledgers and tiers of these active members, from the events that earn."""
    events = events_of(member_ids, only=ORDER_EVENTS | LOYALTY_EVENTS)
    order_events = order_owners_refresh(order_events=order_events_of(events))
    points_reconcile(histories=loyalty_histories(member_ids, events, order_events))


def _traits_write(
    member_ids: set[int], events: list[MemberEvent]
) -> tuple[dict[int, dict[str, object]], list[ConsentSource]]:
    """Every trait of these members, from all their events: exact after merges and splits.
    Returns each member's traits (key: latest value), and the events that may state consent
    (``member_events.trait_observations``) for ``members.consent``."""
    observations, consent = trait_observations(events)
    rows = [
        (member_id, o)
        for member_id, found in observations.items()
        for o in latest_traits(found, settings.MEMBER_TRAIT_CHANNEL_PRECEDENCE).values()
    ]
    rows_delete(MemberTrait, column="member", keys=member_ids)
    traits: dict[int, dict[str, object]] = defaultdict(dict)
    for member_id, o in rows:
        traits[member_id][o.key] = o.value
    traits_write(rows)
    return traits, consent


def _aggregates_write(
    member_ids: set[int], events: list[MemberEvent], order_events: dict[int, list[OrderEvent]],
    definitions: Definitions, now: datetime,
) -> dict[int, dict[str, object]]:  # fmt: skip
    """Orders and figures of these members, from all their events (``members.aggregates``),
    with the counts of the events passing each filter rules count over all time (0 included)
    and the times of those passing each filter windowed rules count, as far back as they read
    at ``now``. Returns each member's figures as stored (the names rules read:
    ``rules.syntax.AGGREGATES``)."""
    counts: dict[int, dict[str, int]] = {member_id: defaultdict(int) for member_id in member_ids}
    last_event_at: dict[int, datetime] = {}
    stores: dict[int, set[str]] = defaultdict(set)
    counted: dict[int, list[EventFact]] = defaultdict(list)
    ever_filters, window_filters = definitions.ever_filters, definitions.window_filters
    ever_names = {wanted.name for wanted in ever_filters.values()} | {
        wanted.name for wanted, _ in window_filters.values()
    }
    for e in events:
        if e.name in ever_names:
            counted[e.member_id].append(EventFact(e.name, e.at, e.channel, e.store_code, e.properties or {}))
        count = counts[e.member_id]
        count["events"] += 1
        if e.channel in CHANNELS:
            count[e.channel] += 1
        if e.store_code:
            stores[e.member_id].add(e.store_code)
        if e.member_id not in last_event_at or e.at > last_event_at[e.member_id]:
            last_event_at[e.member_id] = e.at
    aggregates: list[list] = []
    orders: list[tuple[int, Order]] = []
    for member_id in sorted(member_ids):
        found = orders_of(order_events.get(member_id, ()))
        figures = aggregates_of(found.values(), settings.CDP_CURRENCY)
        aggregates.append(
            aggregate_row(
                member_id,
                figures,
                counts[member_id],
                stores[member_id],
                last_event_at.get(member_id),
                event_counts_add({}, counted[member_id], ever_filters),
                event_times_add({}, counted[member_id], window_filters, now),
            )
        )
        orders += [(member_id, order) for order in found.values()]
    rows_delete(MemberOrder, column="member", keys=member_ids)
    orders_insert(orders)
    return aggregates_upsert(aggregates)


def _covered_by(
    member_ids: set[int], events: list[MemberEvent]
) -> dict[int, tuple[int, datetime | None, int]]:
    """How far these events cover each member's: highest event id, latest event time, the sum
    of the event ids."""
    covered: dict[int, tuple[int, datetime | None, int]] = dict.fromkeys(member_ids, (0, None, 0))
    for e in events:
        event_id, at, total = covered[e.member_id]
        covered[e.member_id] = (
            max(event_id, e.event_id),
            e.at if at is None or e.at > at else at,
            total + e.event_id,
        )
    return covered


def _facts_of(
    member_ids: set[int], events: list[MemberEvent], traits: dict[int, dict[str, object]],
    figures: dict[int, dict[str, object]], consents: dict[int, tuple[ConsentFact, ...]],
) -> dict[int, MemberFacts]:  # fmt: skip
    """What rules read of each member that the refresh has in hand (``memberships_refresh``
    reads the rest)."""
    seen: dict[int, list[EventFact]] = defaultdict(list)
    for e in events:
        seen[e.member_id].append(EventFact(e.name, e.at, e.channel, e.store_code, e.properties or {}))
    return {
        member_id: MemberFacts(
            member_id, traits=traits.get(member_id, {}), aggregates=figures.get(member_id, {}),
            events=tuple(seen[member_id]), consents=consents.get(member_id, ()),
        )
        for member_id in member_ids
    }  # fmt: skip


# The refresh writes a few hundred members' rows per statement: parameters go as binary arrays
# through ``unnest`` (Django's bulk_create builds and quotes one placeholder per value, which
# cost more than the recomputation itself). Only model table names are interpolated.
# Each member's marks by index (the lateral subquery with its own locking clause is walked per
# member, never flattened into a join the planner could turn into a scan of the queue).
_MARKS_OF_MEMBERS = (
    "SELECT d.id, k.id, d.from_events FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL "
    f"(SELECT id, from_events FROM {DirtyMark._meta.db_table} WHERE member_id = k.id FOR UPDATE SKIP LOCKED) AS d"
)
_ACTIVE_OF = f"SELECT id FROM {Member._meta.db_table} WHERE id = ANY(%b::bigint[]) AND status = %b"
