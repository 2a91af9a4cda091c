from django.db import migrations

# The queue is emptied from its oldest end: every claim walks the index entries of the rows
# claimed before it until a vacuum removes them. Autovacuum (where it runs) after a few
# thousand claimed rows, not after a fifth of the table (200,000 rows behind a backlog of a
# million). The pipeline also vacuums it itself now and then (events.pipeline).
FORWARD = "ALTER TABLE events_pendingevent SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000)"
BACKWARD = "ALTER TABLE events_pendingevent RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)"


class Migration(migrations.Migration):

    dependencies = [
        ('events', '0007_source_erasure'),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
