"""The points ledger's invariants, held by the database whatever code writes to it:

- ledger rows are append-only: no delete, no change except the member they belong to
  (a row follows its member through a merge or a split);
- the account balance is the sum of the ledger: a trigger adds each row as it is written
  and moves it between accounts when its member changes;
- the balance floor: at commit, an account whose program forbids debt may not be below 0.
"""

from django.db import migrations

LEDGER_GUARDS = """
CREATE FUNCTION members_points_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'points ledger rows are never deleted (key %): append a correction', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.kind, NEW.points, NEW.key, NEW.cause_key, NEW.reason, NEW.derived, NEW.event_id,
        NEW.order_id, NEW.channel, NEW.staff_user_id, NEW.at, NEW.available_at, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.points, OLD.key, OLD.cause_key, OLD.reason, OLD.derived, OLD.event_id,
        OLD.order_id, OLD.channel, OLD.staff_user_id, OLD.at, OLD.available_at, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'points ledger rows are never changed (key %): append a correction', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER points_entry_append_only BEFORE UPDATE OR DELETE ON members_pointsentry
    FOR EACH ROW EXECUTE FUNCTION members_points_entry_append_only();

CREATE FUNCTION members_points_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.member_id = OLD.member_id THEN
            RETURN NULL;
        END IF;
        UPDATE members_pointsaccount SET balance = balance - OLD.points, updated_at = now()
        WHERE member_id = OLD.member_id;
    END IF;
    INSERT INTO members_pointsaccount AS account
        (member_id, balance, negative_allowed, tier, next_expiry_points, updated_at)
    VALUES (
        NEW.member_id, NEW.points,
        COALESCE((SELECT negative_balance = 'allow' FROM members_loyaltyprogram WHERE key = 'default'), true),
        '', 0, now()
    )
    ON CONFLICT (member_id) DO UPDATE SET balance = account.balance + EXCLUDED.balance, updated_at = now();
    RETURN NULL;
END $$;

CREATE TRIGGER points_entry_balance AFTER INSERT OR UPDATE OF member_id ON members_pointsentry
    FOR EACH ROW EXECUTE FUNCTION members_points_balance();

CREATE FUNCTION members_points_balance_floor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Deferred to commit: read the account as it ends, not as this row's change left it.
    PERFORM 1 FROM members_pointsaccount
    WHERE member_id = NEW.member_id AND balance < 0 AND NOT negative_allowed;
    IF FOUND THEN
        RAISE EXCEPTION 'points balance of member % would fall below 0 and the program allows no debt',
            NEW.member_id USING ERRCODE = 'check_violation', CONSTRAINT = 'points_balance_floor';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER points_balance_floor AFTER INSERT OR UPDATE ON members_pointsaccount
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION members_points_balance_floor();
"""

REMOVE_LEDGER_GUARDS = """
DROP TRIGGER points_balance_floor ON members_pointsaccount;
DROP FUNCTION members_points_balance_floor();
DROP TRIGGER points_entry_balance ON members_pointsentry;
DROP FUNCTION members_points_balance();
DROP TRIGGER points_entry_append_only ON members_pointsentry;
DROP FUNCTION members_points_entry_append_only();
"""


def default_program_create(apps, schema_editor):  # noqa: ANN001, ANN201
    apps.get_model("members", "LoyaltyProgram").objects.get_or_create(key="default")


class Migration(migrations.Migration):
    dependencies = [("members", "0006_loyalty")]

    operations = [
        migrations.RunSQL(LEDGER_GUARDS, REMOVE_LEDGER_GUARDS),
        migrations.RunPython(default_program_create, migrations.RunPython.noop),
    ]
