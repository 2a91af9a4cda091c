-- The points ledger's invariants, held by PostgreSQL whatever code writes to the tables
-- (models: members.loyalty.models.PointsEntry and PointsAccount). This file is the one place
-- they are defined; migration loyalty 0002 applies it. Changing this file needs a new
-- migration that applies it again and records the file's SHA-256 in APPLIES_LEDGER_SHA256
-- (tests/members/loyalty/test_ledger_sql.py holds the file to it). It is idempotent: applied
-- twice, nothing changes.
--
-- 1. Ledger rows are append-only: never deleted, never changed except the member they belong
--    to (a row follows its member through a merge or a split) and, in an erasure, the reason
--    staff wrote (it may name the person).
-- 2. An account's balance is the sum of its member's ledger: rows written or moved by one
--    statement are added to (or moved between) accounts once per account, from the
--    statement's transition tables, in member order (the lock order of the refresh).
-- 3. The floor: at commit, an account whose program forbids debt may not be below 0 (checked
--    at commit, so a merge or split may move rows between accounts in any order).

CREATE OR REPLACE FUNCTION members_points_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'points ledger rows are never deleted (key %): append a correction', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    -- The one exception: an erasure (a transaction that says so: SET LOCAL cdp.erasure = 'on',
    -- members.loyalty.erasure) may rewrite ``reason``, what staff typed, which can hold a name.
    IF (NEW.id, NEW.kind, NEW.points, NEW.key, NEW.cause_key, NEW.derived, NEW.event_id,
        NEW.order_id, NEW.channel, NEW.staff_user_id, NEW.at, NEW.available_at, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.points, OLD.key, OLD.cause_key, OLD.derived, OLD.event_id,
        OLD.order_id, OLD.channel, OLD.staff_user_id, OLD.at, OLD.available_at, OLD.expires_at, OLD.created_at)
       OR (NEW.reason IS DISTINCT FROM OLD.reason AND current_setting('cdp.erasure', true) IS DISTINCT FROM 'on') THEN
        RAISE EXCEPTION 'points ledger rows are never changed (key %): append a correction', OLD.key
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS points_entry_append_only ON members_pointsentry;
CREATE TRIGGER points_entry_append_only BEFORE UPDATE OR DELETE ON members_pointsentry
    FOR EACH ROW EXECUTE FUNCTION members_points_entry_append_only();

CREATE OR REPLACE FUNCTION members_points_balance_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH delta AS (SELECT member_id, sum(points) AS points FROM added GROUP BY member_id)
    INSERT INTO members_pointsaccount AS account
        (member_id, balance, negative_allowed, tier, next_expiry_points, updated_at)
    SELECT d.member_id, d.points,
           COALESCE((SELECT negative_balance = 'allow' FROM members_loyaltyprogram WHERE key = 'default'), true),
           '', 0, now()
    FROM delta AS d ORDER BY d.member_id
    ON CONFLICT (member_id) DO UPDATE SET balance = account.balance + EXCLUDED.balance, updated_at = now();
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS points_entry_balance_added ON members_pointsentry;
CREATE TRIGGER points_entry_balance_added AFTER INSERT ON members_pointsentry
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION members_points_balance_added();

-- Rows only ever change member (the append-only trigger refuses anything else).
CREATE OR REPLACE FUNCTION members_points_balance_moved() RETURNS trigger LANGUAGE plpgsql AS $$
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
    INSERT INTO members_pointsaccount AS account
        (member_id, balance, negative_allowed, tier, next_expiry_points, updated_at)
    SELECT d.member_id, d.points,
           COALESCE((SELECT negative_balance = 'allow' FROM members_loyaltyprogram WHERE key = 'default'), true),
           '', 0, now()
    FROM delta AS d ORDER BY d.member_id
    ON CONFLICT (member_id) DO UPDATE SET balance = account.balance + EXCLUDED.balance, updated_at = now();
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS points_entry_balance_moved ON members_pointsentry;
CREATE TRIGGER points_entry_balance_moved AFTER UPDATE ON members_pointsentry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION members_points_balance_moved();

CREATE OR REPLACE FUNCTION members_points_balance_floor() RETURNS trigger LANGUAGE plpgsql AS $$
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

DROP TRIGGER IF EXISTS points_balance_floor ON members_pointsaccount;
CREATE CONSTRAINT TRIGGER points_balance_floor AFTER INSERT OR UPDATE ON members_pointsaccount
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION members_points_balance_floor();
