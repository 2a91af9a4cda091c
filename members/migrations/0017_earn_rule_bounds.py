"""Earning rules' rate and multipliers bounded where they are written (the admin: validators
only, no column changes), so that an order's points stay far inside the ledger's 64 bits.
Rules stored before keep their values; the points derivation holds them to the same bounds."""

import django.core.validators
import members.loyalty.models
from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0016_points_64_bit_and_wide_figures"),
    ]

    operations = [
        migrations.AlterField(
            model_name="earnrule",
            name="channel_multipliers",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text='Channel to multiplier, from 0 to 10: e.g. {"pos": 2}',
                validators=[members.loyalty.models.validate_multipliers],
            ),
        ),
        migrations.AlterField(
            model_name="earnrule",
            name="points_per_unit",
            field=models.DecimalField(
                decimal_places=4,
                default=1,
                max_digits=8,
                validators=[
                    django.core.validators.MinValueValidator(0),
                    django.core.validators.MaxValueValidator(Decimal("9999.9999")),
                ],
            ),
        ),
        migrations.AlterField(
            model_name="earnrule",
            name="tier_multipliers",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text='Tier to multiplier, from 0 to 10: e.g. {"gold": 1.5}',
                validators=[members.loyalty.models.validate_multipliers],
            ),
        ),
    ]
