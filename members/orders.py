"""Writes of order ownership: one order, one owner, whichever member's refresh comes first.

The same order (source and ``order_id``) can reach two members: a till re-sends a sale under
the right customer, two systems confuse their customers, a client misbehaves. The order is
the member's whose completion of it is the latest (event time, then messageId); the others'
completions of it count for nothing, in figures and in points (``members.aggregates``).

Each member's refresh weighs its members' claims (their latest completion of each order)
against the recorded owner (``OrderOwner``): the greater wins. Taking the max is what makes the
answer independent of the order events and refreshes come in. A member whose order another
claim took is marked dirty, so that its next refresh gives the order (and its points) up; a
member that loses nothing is marked by nobody, so two claimants never refresh each other for
ever. Two refreshes weighing one order at once serialize on its row: the row is locked (created
if missing) before it is changed, and the owner it held is read under that lock, so the member
it displaces is the one marked. Rows are locked in one order (source, order id), after the
members' refresh locks and before their points accounts (``members.locks``).
"""

from collections.abc import Iterable

from cdp.db import binary_parameters_cursor, rows_delete
from events.commerce import ORDER_COMPLETED
from members.aggregates import Claim, OrderEvent, OrderKey, order_claims, order_owners, orders_owned
from members.marks import members_mark_dirty
from members.models import OrderOwner, RefreshWatermark

_TABLE = OrderOwner._meta.db_table
_COLUMNS = "source_id, order_id, at, message_id, event_id, member_id"
_OWNERS_OF = (
    f"SELECT o.source_id, o.order_id, o.at, o.message_id, o.event_id, o.member_id "  # noqa: S608 - model table only
    f"FROM unnest(%b::bigint[], %b::text[]) AS k(source_id, order_id) "
    f"JOIN {_TABLE} AS o ON o.source_id = k.source_id AND o.order_id = k.order_id"
)
_VALUES = "unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::text[], %b::bigint[], %b::bigint[])"
# ``DO UPDATE ... WHERE false`` locks the row it finds without changing it; a missing row is
# created with the claim proposed (and locked, being this transaction's), and only those are
# returned: the rows found are the ones to read again under the lock.
_OWNERS_LOCK = (
    f"INSERT INTO {_TABLE} AS o ({_COLUMNS}) SELECT * FROM {_VALUES} AS v ORDER BY 1, 2 "  # noqa: S608
    "ON CONFLICT (source_id, order_id) DO UPDATE SET member_id = o.member_id WHERE false "
    "RETURNING o.source_id, o.order_id"
)
_OWNERS_WRITE = (
    f"UPDATE {_TABLE} AS o SET at = v.at, message_id = v.message_id, event_id = v.event_id, "  # noqa: S608
    f"member_id = v.member_id FROM {_VALUES} AS v({_COLUMNS}) "
    "WHERE o.source_id = v.source_id AND o.order_id = v.order_id"
)


def order_owners_refresh(*, order_events: dict[int, list[OrderEvent]]) -> dict[int, list[OrderEvent]]:
    """Weigh these active members' claims on their orders, record the new owners, mark the
    members whose orders were taken, and return each member's order events without the
    completions of orders they do not own. The caller holds the members' refresh locks."""
    claims = [
        (key, claim)
        for member_id, events in order_events.items()
        for key, claim in order_claims(member_id, events).items()
    ]
    if not claims:
        return order_events
    owners = _owners_of({key for key, _ in claims})
    if changed := order_owners(owners, claims):
        created = _owners_lock(changed)
        # Those created hold the claim proposed; the others as they are now, under the lock:
        # another refresh may have recorded a claim meanwhile. (A history's first refresh
        # creates every row: read once, not again.)
        owners.update({key: changed[key] for key in created})
        if found := changed.keys() - created:
            owners.update(_owners_of(found))
        changed = order_owners(owners, claims)
        if changed:
            _sql(_OWNERS_WRITE, _columns(changed))
            displaced = {
                owners[key].member_id
                for key, claim in changed.items()
                if key in owners and owners[key].member_id != claim.member_id
            }
            members_mark_dirty(member_ids=displaced - order_events.keys())
            # Their stored orders now hold one that is not theirs: their next refresh starts
            # from the log (``members.incremental``).
            rows_delete(RefreshWatermark, column="member", keys=displaced)
            owners.update(changed)
    return {member_id: orders_owned(member_id, events, owners) for member_id, events in order_events.items()}


def orders_held(*, order_events: dict[int, list[OrderEvent]]) -> dict[int, list[OrderEvent]]:
    """Each member's order events without the completions of orders they do not own, as the
    owners are recorded: weighs no claim and locks nothing (for claims weighed already)."""
    owners = _owners_of(
        {e.order_key for events in order_events.values() for e in events if e.name == ORDER_COMPLETED}
    )
    return {member_id: orders_owned(member_id, events, owners) for member_id, events in order_events.items()}


def _owners_of(keys: Iterable[OrderKey]) -> dict[OrderKey, Claim]:
    """The recorded owners of these orders (those that have one)."""
    keys = sorted(keys)
    with binary_parameters_cursor() as cursor:
        cursor.execute(_OWNERS_OF, [[source_id for source_id, _ in keys], [order_id for _, order_id in keys]])
        return {
            (source_id, order_id): Claim(at, message_id, event_id, member_id)
            for source_id, order_id, at, message_id, event_id, member_id in cursor.fetchall()
        }


def _owners_lock(owners: dict[OrderKey, Claim]) -> set[OrderKey]:
    """Lock these orders' rows, creating the missing ones with the claim given; returns the
    orders whose rows it created."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_OWNERS_LOCK, _columns(owners))
        return {(source_id, order_id) for source_id, order_id in cursor.fetchall()}


def _columns(owners: dict[OrderKey, Claim]) -> list[list[object]]:
    keys = sorted(owners)
    return [
        [source_id for source_id, _ in keys],
        [order_id for _, order_id in keys],
        [owners[key].at for key in keys],
        [owners[key].message_id for key in keys],
        [owners[key].event_id for key in keys],
        [owners[key].member_id for key in keys],
    ]


def _sql(statement: str, params: list[list[object]]) -> None:
    with binary_parameters_cursor() as cursor:
        cursor.execute(statement, params)
