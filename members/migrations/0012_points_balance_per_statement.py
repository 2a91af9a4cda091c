"""The account balance follows the ledger per statement instead of per row.

The refresh appends a batch's ledger rows in one statement; the row trigger of ``0007`` then
upserted the row's account once per row (and queued the deferred floor check once per row):
most of what appending a ledger row cost. The same invariant, balance = sum of the ledger,
now holds with one upsert per account per statement, from the statement's transition tables.
"""

from django.db import migrations

#: The account of a member credited or debited by ``delta``, created if need be.
_ACCOUNT_UPSERT = """
    INSERT INTO members_pointsaccount AS account
        (member_id, balance, negative_allowed, tier, next_expiry_points, updated_at)
    SELECT d.member_id, d.points,
           COALESCE((SELECT negative_balance = 'allow' FROM members_loyaltyprogram WHERE key = 'default'), true),
           '', 0, now()
    FROM delta AS d ORDER BY d.member_id
    ON CONFLICT (member_id) DO UPDATE SET balance = account.balance + EXCLUDED.balance, updated_at = now();
"""

PER_STATEMENT = f"""
DROP TRIGGER points_entry_balance ON members_pointsentry;
DROP FUNCTION members_points_balance();

CREATE FUNCTION members_points_balance_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH delta AS (SELECT member_id, sum(points) AS points FROM added GROUP BY member_id)
    {_ACCOUNT_UPSERT}
    RETURN NULL;
END $$;

CREATE TRIGGER points_entry_balance_added AFTER INSERT ON members_pointsentry
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION members_points_balance_added();

-- Rows only ever change member (the append-only trigger refuses anything else).
CREATE FUNCTION members_points_balance_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH moved AS (
        SELECT o.member_id AS source, n.member_id AS target, n.points
        FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id
        WHERE n.member_id <> o.member_id
    ), delta AS (
        SELECT member_id, sum(points) AS points
        FROM (SELECT source AS member_id, -points AS points FROM moved
              UNION ALL SELECT target, points FROM moved) AS change
        GROUP BY member_id
    )
    {_ACCOUNT_UPSERT}
    RETURN NULL;
END $$;

CREATE TRIGGER points_entry_balance_moved AFTER UPDATE ON members_pointsentry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION members_points_balance_moved();
"""

PER_ROW = """
DROP TRIGGER points_entry_balance_moved ON members_pointsentry;
DROP FUNCTION members_points_balance_moved();
DROP TRIGGER points_entry_balance_added ON members_pointsentry;
DROP FUNCTION members_points_balance_added();

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
"""


class Migration(migrations.Migration):
    dependencies = [("members", "0011_segment_webhooks")]

    operations = [migrations.RunSQL(PER_STATEMENT, PER_ROW)]
