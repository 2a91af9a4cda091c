import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """A tier grant remembers the member it was granted to, so that a split that brings them
    back gives it back; the grants recorded so far were granted to the member holding them
    unless a merge moved them since, which nothing recorded: they start from their holder."""

    dependencies = [
        ("loyalty", "0004_tiergrant"),
        ("members", "0020_loyalty_and_segments_become_apps"),
    ]

    operations = [
        migrations.AddField(
            model_name="tiergrant",
            name="granted_to",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="members.member",
            ),
        ),
        migrations.RunSQL(
            "UPDATE loyalty_tiergrant SET granted_to_id = member_id", reverse_sql=migrations.RunSQL.noop
        ),
        migrations.AlterField(
            model_name="tiergrant",
            name="granted_to",
            field=models.ForeignKey(
                help_text="The member it was granted to (the one its row named when it was recorded).",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="members.member",
            ),
        ),
        migrations.AlterField(
            model_name="tiergrant",
            name="member",
            field=models.ForeignKey(
                help_text="Who holds it now.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="members.member",
            ),
        ),
    ]
