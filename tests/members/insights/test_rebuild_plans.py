"""The rollup job's reads of a batch of changed members (``insights_refresh``: the funnel summary's
rebuild, the stored facts compared) stay index walks on tables the planner has no statistics
for (never analyzed: autovacuum late or off, as in the soak). Planned from default estimates,
``id = ANY`` of a batch's 2,000 keys, a join on ``merged_into_id`` or a lateral subquery the
planner flattened was a scan of the whole table, several a batch: a cost that grew with the
members, not with the batch (bench/soak.py, 2026-12-05)."""

import pytest
from django.db import connection

from cdp.db import binary_parameters_cursor
from members.insights import funnel_events, services
from tests.plans import assert_unanalyzed, plan_of

#: Enough rows that a scan of them costs more than the batch's index probes; the batch's keys
#: (``services.BATCH_SIZE``, as the job takes them).
ROWS, KEYS = 40_000, services.BATCH_SIZE


@pytest.fixture
def unanalyzed_members() -> list[int]:
    """ROWS members, each with stored facts and one funnel summary row, a tenth of them
    absorbed into another, written without an ANALYZE after."""
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
            "UPDATE members_member SET status = 'merged', merged_into_id = id - 1 WHERE id = ANY(%s::bigint[])",
            [ids[1::10]],
        )
        cursor.execute(
            "INSERT INTO insights_memberfacts SELECT id, true, true, '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
            "'{}', '{}' FROM unnest(%s::bigint[]) AS id",
            [ids],
        )
        cursor.execute(
            "INSERT INTO insights_memberfunnelevents SELECT 'Order Completed', id, '{1}', '{0}', '{pos}', '{\"\"}' "
            "FROM unnest(%s::bigint[]) AS id",
            [ids],
        )
    assert_unanalyzed("members_member", "insights_memberfacts", "insights_memberfunnelevents")
    return ids


@pytest.mark.django_db
def test_the_survivors_of_a_batch_are_found_by_key_without_statistics(unanalyzed_members):
    batch = unanalyzed_members[::7][:KEYS]
    plan = plan_of(funnel_events._SURVIVORS, [batch])
    assert "Seq Scan on members_member" not in plan
    with binary_parameters_cursor() as cursor:
        cursor.execute(funnel_events._SURVIVORS, [batch])
        found = {row[0] for row in cursor.fetchall()}
    with connection.cursor() as cursor:  # the plain query, as it was
        cursor.execute(
            "WITH s AS (SELECT DISTINCT COALESCE(merged_into_id, id) AS id FROM members_member WHERE id = ANY(%s)) "
            "SELECT id FROM s UNION SELECT m.id FROM s JOIN members_member m ON m.merged_into_id = s.id",
            [batch],
        )
        assert found == {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_the_funnel_summary_of_a_batch_is_rebuilt_from_its_members_by_key_without_statistics(
    unanalyzed_members,
):
    batch = unanalyzed_members[::7][:KEYS]
    plan = plan_of(funnel_events._REBUILD, [batch, batch])
    assert "Seq Scan on members_member" not in plan


@pytest.mark.django_db
def test_the_stored_facts_of_a_batch_are_walked_by_key_without_statistics(unanalyzed_members):
    batch = unanalyzed_members[::7][:KEYS]
    with connection.cursor() as cursor:
        # At this size the flattened join still chose the index; the soak's 130,000 members
        # made a scan cheaper than 2,000 probes. Dear random reads stand in for that table (the
        # plan without ``OFFSET 0`` then hashes a scan of it; the walk by key has no other way).
        cursor.execute("SET LOCAL random_page_cost = 1000")
    plan = plan_of(services.STORED_FACTS, [batch])
    assert "Seq Scan on insights_memberfacts" not in plan
    assert "insights_memberfacts_pkey" in plan
