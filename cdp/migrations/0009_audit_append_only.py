"""The audit log becomes append-only in the database (``cdp/audit_guard.sql``), after the
entries written so far get their actor's name."""

from pathlib import Path

from django.db import migrations

GUARD = (Path(__file__).resolve().parent.parent / "audit_guard.sql").read_text()

REMOVE_GUARD = """
DROP TRIGGER audit_append_only ON cdp_auditentry;
DROP FUNCTION cdp_audit_append_only();
"""

ACTORS = """
UPDATE cdp_auditentry AS a SET actor = u.username FROM auth_user AS u WHERE u.id = a.user_id AND a.actor = '';
"""


class Migration(migrations.Migration):
    dependencies = [("cdp", "0008_audit_scopes")]

    operations = [
        migrations.RunSQL(ACTORS, migrations.RunSQL.noop),
        migrations.RunSQL(GUARD, REMOVE_GUARD),
    ]
