"""Consent statements are deleted only by an erasure, which now says so the one way every
append-only table of the platform hears it (``SET LOCAL cdp.erasure = 'on'``: the points ledger,
the audit log), instead of a setting of its own (``consent.forget``)."""

from django.db import migrations

ERASURE_SETTING = """
CREATE OR REPLACE FUNCTION consent_statement_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF coalesce(current_setting('cdp.erasure', true), '') = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'consent statements are never deleted (statement %): record a new one', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.purpose, NEW.state, NEW.at, NEW.version, NEW.origin, NEW.event_id, NEW.source_id,
        NEW.channel, NEW.store_code, NEW.app, NEW.device_id, NEW.subject_id, NEW.note, NEW.recorded_at)
       IS DISTINCT FROM
       (OLD.id, OLD.purpose, OLD.state, OLD.at, OLD.version, OLD.origin, OLD.event_id, OLD.source_id,
        OLD.channel, OLD.store_code, OLD.app, OLD.device_id, OLD.subject_id, OLD.note, OLD.recorded_at)
       OR (NEW.recorded_by_id IS DISTINCT FROM OLD.recorded_by_id AND NEW.recorded_by_id IS NOT NULL) THEN
        RAISE EXCEPTION 'consent statements are never changed (statement %): record a new one', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
"""
OWN_SETTING = """
CREATE OR REPLACE FUNCTION consent_statement_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF coalesce(current_setting('consent.forget', true), '') = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'consent statements are never deleted (statement %): record a new one', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.id, NEW.purpose, NEW.state, NEW.at, NEW.version, NEW.origin, NEW.event_id, NEW.source_id,
        NEW.channel, NEW.store_code, NEW.app, NEW.device_id, NEW.subject_id, NEW.note, NEW.recorded_at)
       IS DISTINCT FROM
       (OLD.id, OLD.purpose, OLD.state, OLD.at, OLD.version, OLD.origin, OLD.event_id, OLD.source_id,
        OLD.channel, OLD.store_code, OLD.app, OLD.device_id, OLD.subject_id, OLD.note, OLD.recorded_at)
       OR (NEW.recorded_by_id IS DISTINCT FROM OLD.recorded_by_id AND NEW.recorded_by_id IS NOT NULL) THEN
        RAISE EXCEPTION 'consent statements are never changed (statement %): record a new one', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("consent", "0001_initial")]

    operations = [migrations.RunSQL(ERASURE_SETTING, OWN_SETTING)]
