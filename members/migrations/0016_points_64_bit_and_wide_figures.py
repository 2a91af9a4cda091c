"""Points in 64 bits and money figures in 20 digits, so every sum of amounts ingestion
accepts is stored: an order of ``MAX_AMOUNT`` (10^8) overflowed the 32-bit ledger at a rate of
22 points per unit, a balance near 2^31 overflowed with one more order, and a spend beyond
10^12 overflowed ``numeric(14, 2)``; the member's refresh then failed on every try.

The ledger's trigger functions (0007, 0012) declare no column types (their sums follow the
columns), so they are not recreated.
"""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0015_group_groupmembership"),
    ]

    operations = [
        migrations.AlterField(
            model_name="memberaggregate",
            name="average_order_value",
            field=models.DecimalField(decimal_places=2, max_digits=20, null=True),
        ),
        migrations.AlterField(
            model_name="memberaggregate",
            name="refunded",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberaggregate",
            name="spend",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberaggregate",
            name="spend_app",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberaggregate",
            name="spend_mini_program",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberaggregate",
            name="spend_pos",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberaggregate",
            name="spend_web",
            field=models.DecimalField(decimal_places=2, default=0, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberorder",
            name="refunded",
            field=models.DecimalField(decimal_places=2, max_digits=20),
        ),
        migrations.AlterField(
            model_name="memberorder",
            name="total",
            field=models.DecimalField(decimal_places=2, max_digits=20),
        ),
        migrations.AlterField(
            model_name="pointsaccount",
            name="balance",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="pointsaccount",
            name="next_expiry_points",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="pointsentry",
            name="points",
            field=models.BigIntegerField(),
        ),
        migrations.AlterField(
            model_name="rfmcutoffs",
            name="monetary",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.DecimalField(decimal_places=2, max_digits=20), help_text="Spend.", size=4
            ),
        ),
    ]
