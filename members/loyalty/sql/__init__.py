"""SQL the loyalty app keeps beside its models: the points ledger's invariants (``ledger.sql``)."""

from pathlib import Path

LEDGER_SQL = Path(__file__).with_name("ledger.sql")


def ledger_sql() -> str:
    """The ledger's triggers and functions, as ``ledger.sql`` defines them (idempotent)."""
    return LEDGER_SQL.read_text(encoding="utf-8")
