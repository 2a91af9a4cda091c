"""The segments models, until now in the members app, become the segments app's: their tables keep
their names (``db_table``), so only Django's idea of where they live changes, and the content
types follow, keeping permissions and role grants."""

import functools

import django.contrib.postgres.fields
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_types_move(apps, schema_editor, *, source, target, models):
    """The models' content types (and with them their permissions and every role's grants)
    move to the new app; a content type the new app already has is left as it is."""
    content_type = apps.get_model("contenttypes", "ContentType")
    for model in models:
        if not content_type.objects.filter(app_label=target, model=model).exists():
            content_type.objects.filter(app_label=source, model=model).update(app_label=target)


MODELS = [
    "tag",
    "membertag",
    "tagchange",
    "segment",
    "segmentmember",
    "segmentchange",
    "segmentsrecheck",
    "rfmcutoffs",
    "segmentwebhook",
    "webhookdelivery",
]


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("members", "0020_loyalty_and_segments_become_apps"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # State only: the tables, their constraints, indexes and triggers stay as they are.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="RfmCutoffs",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "recency",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.DateTimeField(), help_text="Last purchase moments.", size=4
                            ),
                        ),
                        (
                            "frequency",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.IntegerField(), help_text="Order counts.", size=4
                            ),
                        ),
                        (
                            "monetary",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.DecimalField(decimal_places=2, max_digits=20),
                                help_text="Spend.",
                                size=4,
                            ),
                        ),
                        (
                            "members",
                            models.PositiveIntegerField(help_text="Members with orders when computed."),
                        ),
                        ("computed_at", models.DateTimeField()),
                    ],
                    options={
                        "verbose_name_plural": "RFM cutoffs",
                        "db_table": "members_rfmcutoffs",
                    },
                ),
                migrations.CreateModel(
                    name="SegmentsRecheck",
                    fields=[
                        (
                            "member",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                primary_key=True,
                                related_name="+",
                                serialize=False,
                                to="members.member",
                            ),
                        ),
                        ("due_at", models.DateTimeField(db_index=True)),
                    ],
                    options={
                        "db_table": "members_segmentsrecheck",
                    },
                ),
                migrations.CreateModel(
                    name="Segment",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("key", models.SlugField(max_length=64, unique=True)),
                        ("name", models.CharField(max_length=200)),
                        ("description", models.CharField(blank=True, max_length=500)),
                        (
                            "kind",
                            models.CharField(
                                choices=[("dynamic", "Dynamic"), ("static", "Static")], max_length=8
                            ),
                        ),
                        (
                            "rule",
                            models.JSONField(
                                blank=True, help_text="For dynamic segments (see docs/rules.md).", null=True
                            ),
                        ),
                        (
                            "built_in",
                            models.BooleanField(
                                default=False, help_text="Shipped with the platform; copy it to change it."
                            ),
                        ),
                        ("size", models.PositiveIntegerField(default=0)),
                        ("computed_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "compute_ms",
                            models.PositiveIntegerField(
                                blank=True, help_text="How long the last full compute took.", null=True
                            ),
                        ),
                        (
                            "error",
                            models.TextField(blank=True, help_text="Why the last compute failed, if it did."),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "members_segment",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("kind", "dynamic"), _negated=True),
                                    ("rule__isnull", False),
                                    _connector="OR",
                                ),
                                name="dynamic_segment_has_rule",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="SegmentWebhook",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("url", models.URLField(max_length=2000)),
                        ("secret", models.CharField(max_length=100)),
                        (
                            "changes",
                            models.CharField(
                                choices=[("entered", "Entered"), ("exited", "Exited"), ("both", "Both")],
                                default="both",
                                max_length=8,
                            ),
                        ),
                        ("active", models.BooleanField(default=True)),
                        (
                            "cursor",
                            models.BigIntegerField(
                                default=0, help_text="Id of the last segment change delivered."
                            ),
                        ),
                        (
                            "failures",
                            models.PositiveIntegerField(default=0, help_text="Failed deliveries in a row."),
                        ),
                        (
                            "next_attempt_at",
                            models.DateTimeField(
                                blank=True, help_text="After a failure: not retried before then.", null=True
                            ),
                        ),
                        ("leased_until", models.DateTimeField(blank=True, null=True)),
                        (
                            "lease",
                            models.UUIDField(
                                blank=True, help_text="The delivering worker's claim.", null=True
                            ),
                        ),
                        ("disabled_reason", models.CharField(blank=True, max_length=300)),
                        ("last_success_at", models.DateTimeField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "segment",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="webhooks",
                                to="segments.segment",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_segmentwebhook",
                    },
                ),
                migrations.CreateModel(
                    name="Tag",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("key", models.SlugField(max_length=64, unique=True)),
                        ("name", models.CharField(max_length=200)),
                        (
                            "kind",
                            models.CharField(
                                choices=[("manual", "Manual"), ("rule", "Rule"), ("computed", "Computed")],
                                max_length=8,
                            ),
                        ),
                        (
                            "rule",
                            models.JSONField(
                                blank=True,
                                help_text="For rule tags: the condition (see docs/rules.md).",
                                null=True,
                            ),
                        ),
                        ("description", models.CharField(blank=True, max_length=500)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "members_tag",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("kind", "rule"), _negated=True),
                                    ("rule__isnull", False),
                                    _connector="OR",
                                ),
                                name="rule_tag_has_rule",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="MemberTag",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("added_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "added_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "member",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "tag",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="members",
                                to="segments.tag",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_membertag",
                    },
                ),
                migrations.CreateModel(
                    name="TagChange",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "action",
                            models.CharField(
                                choices=[("added", "Added"), ("removed", "Removed")], max_length=8
                            ),
                        ),
                        ("at", models.DateTimeField(auto_now_add=True)),
                        (
                            "by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "member",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "tag",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="segments.tag",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_tagchange",
                    },
                ),
                migrations.CreateModel(
                    name="WebhookDelivery",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "delivery_id",
                            models.UUIDField(help_text="Sent as the X-CDP-Delivery header.", unique=True),
                        ),
                        ("first_cursor", models.BigIntegerField()),
                        ("last_cursor", models.BigIntegerField()),
                        ("count", models.PositiveIntegerField(help_text="Changes in the batch.")),
                        (
                            "attempt",
                            models.PositiveIntegerField(
                                help_text="1 for a first try; n for the n-th try in a row."
                            ),
                        ),
                        (
                            "status_code",
                            models.PositiveSmallIntegerField(
                                blank=True, help_text="None: no HTTP answer.", null=True
                            ),
                        ),
                        (
                            "response",
                            models.CharField(
                                blank=True, help_text="The start of the receiver's answer.", max_length=500
                            ),
                        ),
                        ("error", models.CharField(blank=True, max_length=500)),
                        ("duration_ms", models.PositiveIntegerField()),
                        ("at", models.DateTimeField(db_index=True)),
                        ("succeeded", models.BooleanField()),
                        (
                            "webhook",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="deliveries",
                                to="segments.segmentwebhook",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "webhook deliveries",
                        "db_table": "members_webhookdelivery",
                    },
                ),
                migrations.CreateModel(
                    name="SegmentChange",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "change",
                            models.CharField(
                                choices=[("entered", "Entered"), ("exited", "Exited")], max_length=8
                            ),
                        ),
                        ("at", models.DateTimeField()),
                        (
                            "member",
                            models.ForeignKey(
                                db_constraint=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "segment",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="segments.segment",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_segmentchange",
                        "indexes": [models.Index(fields=["segment", "id"], name="segment_changes_feed")],
                    },
                ),
                migrations.CreateModel(
                    name="SegmentMember",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("entered_at", models.DateTimeField()),
                        (
                            "member",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "segment",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="segments.segment",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_segmentmember",
                        "indexes": [models.Index(fields=["member"], name="segments_of_member")],
                        "constraints": [
                            models.UniqueConstraint(fields=("segment", "member"), name="segment_member_once")
                        ],
                    },
                ),
                migrations.AddConstraint(
                    model_name="segmentwebhook",
                    constraint=models.UniqueConstraint(
                        fields=("segment", "url"), name="segment_webhook_url_once"
                    ),
                ),
                migrations.AddConstraint(
                    model_name="segmentwebhook",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("cursor__gte", 0)), name="segment_webhook_cursor_not_negative"
                    ),
                ),
                migrations.AddConstraint(
                    model_name="membertag",
                    constraint=models.UniqueConstraint(fields=("member", "tag"), name="member_tag_once"),
                ),
                migrations.AddIndex(
                    model_name="webhookdelivery",
                    index=models.Index(fields=["webhook", "id"], name="webhook_deliveries_log"),
                ),
            ],
        ),
        migrations.RunPython(
            functools.partial(content_types_move, source="members", target="segments", models=MODELS),
            functools.partial(content_types_move, source="segments", target="members", models=MODELS),
        ),
    ]
