from django.db import migrations

# The refresh takes a claimed member's later marks by member (``_MARKS_OF_MEMBERS``: a lateral
# lookup per member of the batch, through ``dirtymark_by_member``). The queue is analyzed by
# autovacuum at whatever moment it passes its threshold: often right after a vacuum emptied it,
# when the sample holds a few members' marks, and ANALYZE then records the number of distinct
# members as a fixed count. As the queue fills again (a backlog: hundreds of pages in a minute)
# the planner scales the rows to the pages but not the members, so each lookup is estimated at
# hundreds of marks and planned as a scan of the whole queue, once per member of the batch
# (measured: tens of thousands of scans of the queue per 50,000 events, the refresh's buffers
# per event multiplied by ten). A member holds a mark or two at a time: the distinct members
# are stated as a fraction of the rows, which scales with the queue whatever the sample was.
FORWARD = "ALTER TABLE members_dirtymark ALTER COLUMN member_id SET (n_distinct = -0.5)"
BACKWARD = "ALTER TABLE members_dirtymark ALTER COLUMN member_id RESET (n_distinct)"


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0026_aggregate_event_times"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
