"""The loyalty models, until now in the members app, become the loyalty app's: their tables keep
their names (``db_table``), so only Django's idea of where they live changes, and the content
types follow, keeping permissions and role grants."""

import functools

import django.contrib.postgres.constraints
import django.contrib.postgres.fields
import django.core.validators
import django.db.models.deletion
import members.loyalty.models
import members.loyalty.program
from decimal import Decimal
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
    "loyaltyprogram",
    "earnrule",
    "tier",
    "pointsaccount",
    "pointsentry",
    "tierchange",
    "couponcampaign",
    "coupon",
    "couponredemption",
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
                    name="LoyaltyProgram",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("key", models.CharField(default="default", max_length=32, unique=True)),
                        (
                            "negative_balance",
                            models.CharField(
                                choices=[("allow", "allow"), ("forbid", "forbid")],
                                default=members.loyalty.program.NegativeBalance["ALLOW"],
                                help_text="allow: a refund takes back points already spent and the member owes them; forbid: a refund takes back at most the balance and the rest is written off.",
                                max_length=16,
                            ),
                        ),
                        (
                            "refund_returns_redeemed_points",
                            models.BooleanField(
                                default=True,
                                help_text="A refunded order gives back, in proportion, the points spent on it.",
                            ),
                        ),
                        (
                            "tier_basis",
                            models.CharField(
                                choices=[("points", "points"), ("spend", "spend")],
                                default=members.loyalty.program.TierBasis["POINTS"],
                                max_length=16,
                            ),
                        ),
                        ("tier_window_days", models.PositiveIntegerField(default=365)),
                        (
                            "tier_downgrade",
                            models.CharField(
                                choices=[
                                    ("none", "none"),
                                    ("periodic", "periodic"),
                                    ("one_step", "one step"),
                                ],
                                default=members.loyalty.program.Downgrade["NONE"],
                                max_length=16,
                            ),
                        ),
                        (
                            "tier_review_months",
                            models.PositiveIntegerField(
                                default=12,
                                help_text="Reviews fall on the first day of every N-th month, counted from January.",
                            ),
                        ),
                        ("expiring_soon_days", models.PositiveIntegerField(default=30)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "members_loyaltyprogram",
                    },
                ),
                migrations.CreateModel(
                    name="CouponCampaign",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=200)),
                        (
                            "benefit",
                            models.CharField(
                                choices=[("amount", "Amount"), ("percent", "Percent")], max_length=8
                            ),
                        ),
                        (
                            "value",
                            models.DecimalField(
                                decimal_places=2, help_text="Money off, or percent off.", max_digits=12
                            ),
                        ),
                        ("currency", models.CharField(blank=True, max_length=3)),
                        ("minimum_spend", models.DecimalField(decimal_places=2, default=0, max_digits=12)),
                        ("valid_from", models.DateTimeField()),
                        ("valid_until", models.DateTimeField()),
                        (
                            "channels",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.CharField(max_length=16),
                                blank=True,
                                default=list,
                                help_text="Empty: every channel.",
                                size=None,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        "db_table": "members_couponcampaign",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("valid_from__lt", models.F("valid_until"))),
                                name="campaign_valid_range",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("value__gt", 0)), name="campaign_value_positive"
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("benefit", "percent"), _negated=True),
                                    ("value__lte", 100),
                                    _connector="OR",
                                ),
                                name="campaign_percent_at_most_100",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="Coupon",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("code", models.CharField(max_length=64, unique=True)),
                        ("issued_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "member",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "campaign",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="coupons",
                                to="loyalty.couponcampaign",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_coupon",
                        "permissions": [("redeem_coupon", "Can redeem and release coupons at checkout")],
                    },
                ),
                migrations.CreateModel(
                    name="CouponRedemption",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("order_id", models.CharField(max_length=255)),
                        ("channel", models.CharField(max_length=16)),
                        ("order_total", models.DecimalField(decimal_places=2, max_digits=14)),
                        ("discount", models.DecimalField(decimal_places=2, max_digits=14)),
                        ("redeemed_at", models.DateTimeField(auto_now_add=True)),
                        ("released_at", models.DateTimeField(blank=True, null=True)),
                        ("release_reason", models.CharField(blank=True, max_length=200)),
                        (
                            "coupon",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="redemptions",
                                to="loyalty.coupon",
                            ),
                        ),
                        (
                            "member",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "redeemed_by",
                            models.ForeignKey(
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_couponredemption",
                    },
                ),
                migrations.CreateModel(
                    name="EarnRule",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=200)),
                        (
                            "valid_from",
                            models.DateTimeField(blank=True, help_text="Empty: since always.", null=True),
                        ),
                        (
                            "valid_until",
                            models.DateTimeField(
                                blank=True, help_text="Empty: until further notice.", null=True
                            ),
                        ),
                        (
                            "points_per_unit",
                            models.DecimalField(
                                decimal_places=4,
                                default=1,
                                max_digits=8,
                                validators=[
                                    django.core.validators.MinValueValidator(0),
                                    django.core.validators.MaxValueValidator(Decimal("9999.9999")),
                                ],
                            ),
                        ),
                        (
                            "channel_multipliers",
                            models.JSONField(
                                blank=True,
                                default=dict,
                                help_text='Channel to multiplier, from 0 to 10: e.g. {"pos": 2}',
                                validators=[members.loyalty.models.validate_multipliers],
                            ),
                        ),
                        (
                            "tier_multipliers",
                            models.JSONField(
                                blank=True,
                                default=dict,
                                help_text='Tier to multiplier, from 0 to 10: e.g. {"gold": 1.5}',
                                validators=[members.loyalty.models.validate_multipliers],
                            ),
                        ),
                        (
                            "excluded_skus",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.CharField(max_length=128),
                                blank=True,
                                default=list,
                                size=None,
                            ),
                        ),
                        (
                            "excluded_categories",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.CharField(max_length=128),
                                blank=True,
                                default=list,
                                size=None,
                            ),
                        ),
                        ("first_purchase_bonus", models.PositiveIntegerField(default=0)),
                        ("signup_bonus", models.PositiveIntegerField(default=0)),
                        ("referral_bonus", models.PositiveIntegerField(default=0)),
                        (
                            "pending_days",
                            models.PositiveIntegerField(
                                default=0, help_text="Days before earned points can be spent."
                            ),
                        ),
                        (
                            "expiry",
                            models.CharField(
                                choices=[
                                    ("never", "never"),
                                    ("days", "days"),
                                    ("end_of_month", "end of month"),
                                    ("end_of_year", "end of year"),
                                ],
                                default=members.loyalty.program.Expiry["NEVER"],
                                max_length=16,
                            ),
                        ),
                        (
                            "expiry_days",
                            models.PositiveIntegerField(
                                blank=True, help_text="For expiry = days.", null=True
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "members_earnrule",
                        "ordering": ["valid_from"],
                        "constraints": [
                            django.contrib.postgres.constraints.ExclusionConstraint(
                                expressions=[
                                    (
                                        models.Func(
                                            models.F("valid_from"),
                                            models.F("valid_until"),
                                            function="tstzrange",
                                        ),
                                        "&&",
                                    )
                                ],
                                name="earn_rules_do_not_overlap",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    ("valid_from__isnull", True),
                                    ("valid_until__isnull", True),
                                    ("valid_from__lt", models.F("valid_until")),
                                    _connector="OR",
                                ),
                                name="earn_rule_valid_range",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("expiry", "days"), _negated=True),
                                    ("expiry_days__gt", 0),
                                    _connector="OR",
                                ),
                                name="earn_rule_expiry_days_given",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="PointsAccount",
                    fields=[
                        (
                            "member",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                primary_key=True,
                                related_name="points",
                                serialize=False,
                                to="members.member",
                            ),
                        ),
                        ("balance", models.BigIntegerField(default=0)),
                        ("negative_allowed", models.BooleanField(default=True)),
                        ("tier", models.CharField(blank=True, max_length=32)),
                        ("tier_since", models.DateTimeField(blank=True, null=True)),
                        ("recheck_at", models.DateTimeField(blank=True, null=True)),
                        ("next_expiry_at", models.DateTimeField(blank=True, null=True)),
                        ("next_expiry_points", models.BigIntegerField(default=0)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "members_pointsaccount",
                        "indexes": [
                            models.Index(
                                condition=models.Q(("recheck_at__isnull", False)),
                                fields=["recheck_at"],
                                name="points_recheck",
                            ),
                            models.Index(
                                condition=models.Q(("next_expiry_at__isnull", False)),
                                fields=["next_expiry_at"],
                                name="points_next_expiry",
                            ),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="PointsEntry",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("earn", "earn"),
                                    ("redeem", "redeem"),
                                    ("expire", "expire"),
                                    ("reverse", "reverse"),
                                    ("adjust", "adjust"),
                                ],
                                max_length=8,
                            ),
                        ),
                        ("points", models.BigIntegerField()),
                        ("key", models.CharField(max_length=255, unique=True)),
                        ("cause_key", models.CharField(max_length=255)),
                        ("reason", models.CharField(max_length=500)),
                        (
                            "derived",
                            models.BooleanField(
                                help_text="Computed from events (true) or recorded by staff or a till (false)."
                            ),
                        ),
                        (
                            "event_id",
                            models.BigIntegerField(
                                blank=True, help_text="The event that caused it.", null=True
                            ),
                        ),
                        ("order_id", models.CharField(blank=True, max_length=255)),
                        ("channel", models.CharField(blank=True, max_length=16)),
                        (
                            "at",
                            models.DateTimeField(
                                help_text="When it took effect: the event's time, or the request's."
                            ),
                        ),
                        (
                            "available_at",
                            models.DateTimeField(
                                blank=True, help_text="Pending until then (credits only).", null=True
                            ),
                        ),
                        ("expires_at", models.DateTimeField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "member",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                        (
                            "staff_user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "points entries",
                        "db_table": "members_pointsentry",
                        "permissions": [
                            ("adjust_points", "Can add or take away a member's points by hand"),
                            ("redeem_points", "Can spend a member's points at checkout"),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="Tier",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("key", models.SlugField(max_length=32, unique=True)),
                        ("name", models.CharField(max_length=64)),
                        (
                            "rank",
                            models.PositiveSmallIntegerField(
                                help_text="0 is the tier every member starts in.", unique=True
                            ),
                        ),
                        ("threshold", models.DecimalField(decimal_places=2, default=0, max_digits=14)),
                    ],
                    options={
                        "db_table": "members_tier",
                        "ordering": ["rank"],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("rank", 0), _negated=True), ("threshold", 0), _connector="OR"
                                ),
                                name="entry_tier_has_no_threshold",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="TierChange",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("from_tier", models.CharField(blank=True, max_length=32)),
                        ("to_tier", models.CharField(max_length=32)),
                        ("at", models.DateTimeField()),
                        ("reason", models.CharField(max_length=300)),
                        (
                            "member",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="members.member",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "members_tierchange",
                    },
                ),
                migrations.AddIndex(
                    model_name="coupon",
                    index=models.Index(
                        condition=models.Q(("member__isnull", False)),
                        fields=["member"],
                        name="coupons_of_member",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="coupon",
                    constraint=models.UniqueConstraint(
                        fields=("campaign", "member"), name="one_coupon_per_member_per_campaign"
                    ),
                ),
                migrations.AddIndex(
                    model_name="couponredemption",
                    index=models.Index(fields=["order_id"], name="coupon_redemption_by_order"),
                ),
                migrations.AddConstraint(
                    model_name="couponredemption",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("released_at__isnull", True)),
                        fields=("coupon",),
                        name="coupon_redeemed_once",
                    ),
                ),
                migrations.AddIndex(
                    model_name="pointsentry",
                    index=models.Index(fields=["member", "id"], name="points_ledger_of_member"),
                ),
                migrations.AddIndex(
                    model_name="pointsentry",
                    index=models.Index(
                        condition=models.Q(("event_id__isnull", False)),
                        fields=["event_id"],
                        name="points_by_event",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="pointsentry",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("points", 0), _negated=True), name="points_entry_not_zero"
                    ),
                ),
            ],
        ),
        migrations.RunPython(
            functools.partial(content_types_move, source="members", target="loyalty", models=MODELS),
            functools.partial(content_types_move, source="loyalty", target="members", models=MODELS),
        ),
    ]
