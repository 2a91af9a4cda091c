"""The points ledger's triggers, until now defined across migrations members 0007 and 0012, are
(re)applied from the one file that defines them, ``members/loyalty/sql/ledger.sql``: the same
definitions, so a database that ran those migrations does not change. A later change to the
file comes with a migration of its own that applies it again."""

from django.db import migrations

from members.loyalty.sql import ledger_sql

#: The version of ``ledger.sql`` this migration was written for (its SHA-256): a test holds
#: the file to the latest migration that applies it, so an edit without a migration fails.
APPLIES_LEDGER_SHA256 = "e47a093b90b58896b0ea843c74f3ce6c0c3f8d809975e12f8eebf58bb8415f99"


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0001_initial")]

    operations = [migrations.RunSQL(ledger_sql(), migrations.RunSQL.noop)]
