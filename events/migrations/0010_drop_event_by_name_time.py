from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    """The index of 0009 did not pay: funnels over realistic ranges read a large share of the
    log and PostgreSQL scanned it anyway (docs/benchmarks.md, funnels), while segment rules that
    count a member's events by name were planned through it (every event of that name, per
    member) instead of through the member's resolutions (tests/members/segments/test_rules_sql)."""

    atomic = False

    dependencies = [
        ("events", "0009_event_by_name_time"),
    ]

    operations = [
        RemoveIndexConcurrently(model_name="event", name="event_by_name_time"),
    ]
