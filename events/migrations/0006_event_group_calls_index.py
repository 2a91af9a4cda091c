from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built concurrently: the event log is the largest table, and ingestion must not wait on it.
    atomic = False

    dependencies = [
        ("events", "0005_source_default_currency"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(condition=models.Q(type="group"), fields=["group_id"], name="event_group_calls"),
        ),
    ]
