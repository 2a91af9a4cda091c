import django.core.validators
from django.db import migrations, models

import events.models


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0004_parked_events"),
    ]

    operations = [
        migrations.AddField(
            model_name="source",
            name="default_currency",
            field=models.CharField(
                default=events.models.platform_currency,
                help_text="The currency of its Order Completed / Order Refunded events that name none (the "
                "Segment spec makes currency optional); such events are marked as defaulted.",
                max_length=3,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Z]{3}$", "A three-letter ISO 4217 code in capitals, e.g. CNY."
                    )
                ],
            ),
        ),
    ]
