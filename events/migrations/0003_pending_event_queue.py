"""The pipeline's outbox moves from ``Event.processed_at`` to a narrow queue table filled by
a trigger: see ``events.models.PendingEvent``."""

import django.db.models.deletion
from django.db import migrations, models

ENQUEUE = """
CREATE FUNCTION events_event_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events_pendingevent (event_id) SELECT id FROM inserted;
    RETURN NULL;
END
$$;
CREATE TRIGGER event_enqueue AFTER INSERT ON events_event
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION events_event_enqueue();
"""
DEQUEUE = """
DROP TRIGGER event_enqueue ON events_event;
DROP FUNCTION events_event_enqueue();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0002_source_wechat_appid"),
    ]

    operations = [
        migrations.CreateModel(
            name="PendingEvent",
            fields=[
                (
                    "event",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="pending",
                        serialize=False,
                        to="events.event",
                    ),
                ),
            ],
        ),
        migrations.RunSQL(
            "INSERT INTO events_pendingevent (event_id) SELECT id FROM events_event WHERE processed_at IS NULL",
            reverse_sql="UPDATE events_event SET processed_at = now() "
            "WHERE id NOT IN (SELECT event_id FROM events_pendingevent)",
        ),
        migrations.RunSQL(ENQUEUE, reverse_sql=DEQUEUE),
        migrations.RemoveIndex(model_name="event", name="event_unprocessed"),
        migrations.RemoveField(model_name="event", name="processed_at"),
    ]
