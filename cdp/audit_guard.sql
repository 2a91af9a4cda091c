-- The audit log is append-only (cdp.models.AuditEntry): PostgreSQL refuses to delete an entry
-- or change one, whatever code or console sends the statement.
--
-- One sanctioned exception, for erasure (a data subject's right under PIPL and GDPR): an UPDATE
-- that changes only the subject columns (member_ids, detail) is allowed inside a transaction
-- that said `SET LOCAL cdp.erasure = 'on'`. Who did what, when and from where stays.
-- Applied by the migration cdp 0007; kept here beside the model so it reads as one piece.

CREATE FUNCTION cdp_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit entries are never deleted (entry %)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.user_id, NEW.actor, NEW.action, NEW.channel, NEW.personal_fields, NEW.address, NEW.at)
       IS DISTINCT FROM
       (OLD.id, OLD.user_id, OLD.actor, OLD.action, OLD.channel, OLD.personal_fields, OLD.address, OLD.at) THEN
        RAISE EXCEPTION 'audit entries are never changed (entry %)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.member_ids, NEW.detail) IS DISTINCT FROM (OLD.member_ids, OLD.detail)
       AND current_setting('cdp.erasure', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'audit entries are never changed (entry %); an erasure rewrites their subject '
            'only under SET LOCAL cdp.erasure = ''on''', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON cdp_auditentry
    FOR EACH ROW EXECUTE FUNCTION cdp_audit_append_only();
