from django.db import migrations, models

# The unique constraint on ``key`` stays as it is (same name: nothing rebuilt); only the
# second index ``unique=True`` had Django build beside it (varchar_pattern_ops, for LIKE
# prefixes no query asks for) goes. See ``PointsEntry.key``.
LIKE_INDEX = "members_pointsentry_key_82a9bb45_like"


class Migration(migrations.Migration):

    dependencies = [
        ("loyalty", "0007_points_checkpoint_cold_part"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="pointsentry",
                    name="key",
                    field=models.CharField(max_length=255),
                ),
                migrations.AddConstraint(
                    model_name="pointsentry",
                    constraint=models.UniqueConstraint(fields=("key",), name="members_pointsentry_key_key"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {LIKE_INDEX}",
                    f"CREATE INDEX IF NOT EXISTS {LIKE_INDEX} ON members_pointsentry (key varchar_pattern_ops)",
                ),
            ],
        ),
    ]
