-- The audit log is append-only (cdp.models.AuditEntry): PostgreSQL refuses to delete an entry
-- or change one, whatever code or console sends the statement.
--
-- Two sanctioned exceptions, each only inside a transaction that said so with SET LOCAL:
-- * erasure (a data subject's right under PIPL and GDPR), `cdp.erasure = 'on'`: an UPDATE that
--   changes only the subject column `detail` (the path or text that named the person;
--   cdp.services.audit_subjects_erase). Who did what to which member id, when and from where
--   stays.
-- * retention, `cdp.retention = 'on'`: a DELETE of entries past their period
--   (cdp.services.audit_entries_expire).
-- Applied by the migration cdp 0009; kept here beside the model so it reads as one piece.

CREATE FUNCTION cdp_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('cdp.retention', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit entries are never deleted (entry %) but by retention, under SET LOCAL '
            'cdp.retention = ''on''', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.user_id, NEW.actor, NEW.action, NEW.member_ids, NEW.channel, NEW.personal_fields,
        NEW.address, NEW.at)
       IS DISTINCT FROM
       (OLD.id, OLD.user_id, OLD.actor, OLD.action, OLD.member_ids, OLD.channel, OLD.personal_fields,
        OLD.address, OLD.at) THEN
        RAISE EXCEPTION 'audit entries are never changed (entry %)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.detail IS DISTINCT FROM OLD.detail
       AND current_setting('cdp.erasure', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'audit entries are never changed (entry %); an erasure rewrites their subject '
            'only under SET LOCAL cdp.erasure = ''on''', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON cdp_auditentry
    FOR EACH ROW EXECUTE FUNCTION cdp_audit_append_only();
