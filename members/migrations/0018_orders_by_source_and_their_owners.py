"""An order is its source and its ``order_id`` there, and has one owner.

``MemberOrder`` gains the order's source (from the event that placed it) and is unique per
member, source and order id. ``OrderOwner`` records, per order, the claim (a member's latest
completion of it) that owns it; it starts from the orders members hold now, the latest placed
one where several members hold one order, and every refresh weighs its members' claims
against it from then on (``members.orders``).
"""

from django.db import migrations, models

SOURCES_FROM_EVENTS = """
UPDATE members_memberorder AS o SET source_id = e.source_id FROM events_event AS e WHERE e.id = o.event_id;
"""

OWNERS_FROM_ORDERS = """
INSERT INTO members_orderowner (source_id, order_id, member_id, event_id, at, message_id)
SELECT DISTINCT ON (o.source_id, o.order_id) o.source_id, o.order_id, o.member_id, o.event_id, e.timestamp,
       e.message_id
FROM members_memberorder AS o JOIN events_event AS e ON e.id = o.event_id
WHERE o.placed_at IS NOT NULL
ORDER BY o.source_id, o.order_id, e.timestamp DESC, e.message_id DESC;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0017_earn_rule_bounds"),
        ("events", "0006_event_group_calls_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="OrderOwner",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("source_id", models.BigIntegerField()),
                ("order_id", models.CharField(max_length=255)),
                (
                    "member_id",
                    models.BigIntegerField(help_text="The member whose claim owns it (as last weighed)."),
                ),
                ("event_id", models.BigIntegerField(help_text="The completion that makes the claim.")),
                ("at", models.DateTimeField(help_text="The completion's event time.")),
                ("message_id", models.CharField(max_length=255)),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("source_id", "order_id"), name="order_owner_unique")
                ],
            },
        ),
        migrations.RemoveConstraint(model_name="memberorder", name="member_order_unique"),
        migrations.AddField(
            model_name="memberorder",
            name="source_id",
            field=models.BigIntegerField(default=0, help_text="The source that numbered the order."),
            preserve_default=False,
        ),
        migrations.RunSQL(SOURCES_FROM_EVENTS, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="memberorder",
            constraint=models.UniqueConstraint(
                fields=("member", "source_id", "order_id"), name="member_order_unique"
            ),
        ),
        migrations.RunSQL(OWNERS_FROM_ORDERS, migrations.RunSQL.noop),
    ]
