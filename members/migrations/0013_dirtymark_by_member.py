from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("members", "0012_points_balance_per_statement")]

    operations = [
        migrations.AddIndex(
            model_name="dirtymark",
            index=models.Index(fields=["member"], name="dirtymark_by_member"),
        ),
    ]
