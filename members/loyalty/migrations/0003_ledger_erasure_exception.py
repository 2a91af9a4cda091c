"""The ledger's one exception for an erasure (``members/loyalty/sql/ledger.sql``): a row's
``reason`` (what staff wrote) may be rewritten in a transaction that says it is an erasure
(``SET LOCAL cdp.erasure = 'on'``, ``members.loyalty.erasure``), so that a name or a phone
typed into it can be removed. Every other column stays as written; rows are never deleted."""

from django.db import migrations

from members.loyalty.sql import ledger_sql

#: The version of ``ledger.sql`` this migration applies (its SHA-256; see loyalty 0002).
APPLIES_LEDGER_SHA256 = "73241faa9d691ef7ce6e12a769296eb74d5cd300ade0c25acd06f06a878b9b8e"


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0002_ledger_invariants_from_their_file")]

    # Going back leaves the exception in place: the file holds only the newest version, and an
    # exception nobody uses without SET LOCAL cdp.erasure changes nothing.
    operations = [migrations.RunSQL(ledger_sql(), migrations.RunSQL.noop)]
