"""Query plans in tests: what PostgreSQL would do with a statement, and tables written without
statistics (never analyzed: a fresh bulk import, autovacuum late or off), where a plan from
default estimates can turn a batch's index walks into scans of a whole table."""

from cdp.db import binary_parameters_cursor


def plan_of(statement: str, params: list) -> str:
    """``EXPLAIN`` of ``statement`` with ``params`` (binary parameters, as the code runs it)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute("EXPLAIN " + statement, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def assert_unanalyzed(*tables: str) -> None:
    """Fail unless the planner has no statistics for any of ``tables`` (what the test is about)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stats WHERE tablename = ANY(%b::text[])", [list(tables)])
        assert cursor.fetchone()[0] == 0, "the tables must have no planner statistics for this test"
