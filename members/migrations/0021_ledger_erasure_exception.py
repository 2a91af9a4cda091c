"""The ledger's one exception for an erasure: a row's ``reason`` (what staff wrote) may be
rewritten in a transaction that says it is an erasure (``SET LOCAL cdp.erasure = 'on'``,
``members.loyalty.erasure``), so that a name or a phone typed into it can be removed. Every
other column stays as it was written; rows are still never deleted."""

from django.db import migrations

_CHECKED = """
    IF (NEW.id, NEW.kind, NEW.points, NEW.key, NEW.cause_key, {reason}NEW.derived, NEW.event_id,
        NEW.order_id, NEW.channel, NEW.staff_user_id, NEW.at, NEW.available_at, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.points, OLD.key, OLD.cause_key, {old_reason}OLD.derived, OLD.event_id,
        OLD.order_id, OLD.channel, OLD.staff_user_id, OLD.at, OLD.available_at, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'points ledger rows are never changed (key %): append a correction', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;"""


def _function(*, erasure_exception: bool) -> str:
    if erasure_exception:
        checks = (
            "    IF current_setting('cdp.erasure', true) = 'on' THEN"
            + _CHECKED.format(reason="", old_reason="").replace("\n", "\n    ")
            + "\n    ELSE"
            + _CHECKED.format(reason="NEW.reason, ", old_reason="OLD.reason, ").replace("\n", "\n    ")
            + "\n    END IF;"
        )
    else:
        checks = _CHECKED.format(reason="NEW.reason, ", old_reason="OLD.reason, ")
    return f"""
CREATE OR REPLACE FUNCTION members_points_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'points ledger rows are never deleted (key %): append a correction', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
{checks}
    RETURN NEW;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("members", "0020_segmentchange_reason")]

    operations = [
        migrations.RunSQL(_function(erasure_exception=True), _function(erasure_exception=False)),
    ]
