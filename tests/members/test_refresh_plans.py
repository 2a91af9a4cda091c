"""The incremental refresh's reads by a batch of members stay index walks on tables the planner
has no statistics for (never analyzed: a fresh bulk import, autovacuum late or off). Planned
from default estimates, a join of a few hundred keys, or an ``IN`` list of them, on a
non-unique column was a scan of the whole table once per refresh batch: a cost that grew with
the table, not with the batch."""

import pytest
from django.db import connection

from cdp.db import binary_parameters_cursor
from members import incremental
from members.segments.evaluate import _STATE_OF_MEMBERS
from tests.plans import assert_unanalyzed, plan_of

#: Enough rows that a scan of them costs more than a few hundred index probes; the batch's keys.
ROWS, KEYS = 20_000, 300


@pytest.fixture
def unanalyzed_members() -> list[int]:
    """ROWS members, each with one trait and one order, written without an ANALYZE after."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO members_member (status, first_event_at, first_event_message_id, first_event_source_id, "
            "last_event_at, last_event_message_id, last_event_source_id, created_at, updated_at) "
            "SELECT 'active', now(), 'm' || n, 1, now(), 'm' || n, 1, now(), now() FROM generate_series(1, %s) AS n "
            "RETURNING id",
            [ROWS],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        cursor.execute(
            "INSERT INTO members_membertrait (member_id, key, value, observed_at, channel, source_id, event_id, lookup) "
            "SELECT id, 'city', '\"Beijing\"'::jsonb, now(), 'pos', 1, id, '{}' FROM unnest(%s::bigint[]) AS id",
            [ids],
        )
        cursor.execute(
            "INSERT INTO members_memberorder (member_id, source_id, order_id, currency, total, refunded, placed_at, "
            "channel, store_code, event_id) SELECT id, 1, 'o' || id, 'CNY', 10, 0, now(), 'pos', '', id "
            "FROM unnest(%s::bigint[]) AS id",
            [ids],
        )
    assert_unanalyzed("members_membertrait", "members_memberorder")
    return ids


@pytest.mark.django_db
def test_traits_of_a_batch_walk_the_member_index_without_statistics(unanalyzed_members):
    batch = unanalyzed_members[::50][:KEYS]
    plan = plan_of(incremental._TRAITS_OF, [batch])
    assert "Seq Scan on members_membertrait" not in plan
    assert "member_trait_unique" in plan
    assert incremental._traits_of(set(batch)) == {pk: {"city": "Beijing"} for pk in batch}


@pytest.mark.django_db
def test_stored_orders_of_a_batch_walk_the_member_index_without_statistics(unanalyzed_members):
    batch = unanalyzed_members[::50][:KEYS]
    plan = plan_of(incremental._ORDERS_OF, [batch, [f"o{pk}" for pk in batch]])
    assert "Seq Scan on members_memberorder" not in plan
    assert "member_order_unique" in plan


@pytest.mark.django_db
def test_an_analyze_of_a_few_members_marks_leaves_the_queues_members_scaling_with_it():
    """Autovacuum analyzes the dirty marks whenever they pass its threshold, often when the
    queue holds a few members' marks. Recorded as a fixed count of members, the planner then
    took each member's lookup in a refilled queue for hundreds of marks and scanned the whole
    queue once per member of a refresh batch (members 0026): the count must scale with the
    queue, as a fraction of its rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO members_dirtymark (member_id, marked_at, from_events) "
            "SELECT 1 + mod(n, 2), now(), true FROM generate_series(1, 40) AS n"
        )
        cursor.execute("ANALYZE members_dirtymark")
        cursor.execute(
            "SELECT n_distinct FROM pg_stats WHERE tablename = 'members_dirtymark' AND attname = 'member_id'"
        )
        (distinct,) = cursor.fetchone()
    assert distinct < 0  # a fraction of the rows, not a count of members


@pytest.mark.django_db
def test_the_identifier_types_rules_ask_about_are_probed_by_the_member_index_without_statistics(
    unanalyzed_members,
):
    """Whether each member of a refresh batch holds a type some rule names: a probe of the
    member's index per type (``members.segments.evaluate._STATE_OF_MEMBERS``), never a scan
    of every identifier."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO identity_identifier (type, value, member_id, last_seen_message_id, alias_class, created_at) "
            "SELECT t, t || id, id, '', '', now() FROM unnest(%s::bigint[]) AS id, "
            "unnest(ARRAY['anonymous_id', 'device_id', 'phone']) AS t",
            [unanalyzed_members],
        )
    assert_unanalyzed("identity_identifier", "identity_memberidentifier")
    batch = unanalyzed_members[::50][:KEYS]
    plan = plan_of(_STATE_OF_MEMBERS, [["email", "phone"], batch])
    assert "Seq Scan on identity_identifier" not in plan
    assert "identifier_by_member" in plan
    with binary_parameters_cursor() as cursor:
        cursor.execute(_STATE_OF_MEMBERS, [["email", "phone"], batch])
        assert {row[0]: row[1] for row in cursor.fetchall()} == {pk: ["phone"] for pk in batch}
