from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built concurrently: the event log is the largest table, and ingestion must not wait on it.
    atomic = False

    dependencies = [
        ("events", "0008_pending_queue_autovacuum"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(fields=["event", "timestamp"], name="event_by_name_time"),
        ),
    ]
