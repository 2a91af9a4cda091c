"""Insights' tables: the KPI rollups and the queues that keep them incremental, and what staff
define for funnels, attribution and channel ROI (saved funnels, marketing spend).

The KPI part (the first block): the members' facts as last counted (``MemberFacts``), the daily
rollups per channel and store (``DailyRollup``, ``PointsRollup``, ``CouponRollup``) and what is
waiting to be rolled up (``DirtyMember``, ``RollupWatermark``). All derived: ``manage.py
compute_insights`` rebuilds them from members' tables.
"""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from members.insights.kpis import COLUMNS, MONEY_COLUMNS


def _figures() -> dict[str, models.Field]:
    return {
        # Money as members' figures: 18 digits before the point.
        column: models.DecimalField(max_digits=20, decimal_places=2, default=0)
        if column in MONEY_COLUMNS
        else models.BigIntegerField(default=0)
        for column in COLUMNS
    }


class DirtyMember(models.Model):
    """Members the refresh recomputed since the last rollup (filled by the members refresh
    through its hook, ``services.members_changed``). No unique key: two refreshes of one
    member insert twice rather than wait on each other; the rollup job takes both rows."""

    member_id = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["member_id"], name="insights_dirty_member")]

    def __str__(self) -> str:
        return f"member {self.member_id} to roll up"


class RollupWatermark(models.Model):
    """How far an append-only table has been rolled up (the points ledger: its highest id)."""

    name = models.CharField(max_length=32, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} rolled up to {self.value}"


class MemberFacts(models.Model):
    """What the rollups counted of one member (``members.insights.member_days_sql``): whether it
    is identified and analysed, its events per day, channel and store, its orders with a net
    above zero per day, channel and store, as parallel arrays in (day, channel, store) order.
    One row per member, written when its facts change: the incremental path takes these facts'
    contributions off the rollups and adds the new ones (a member merged away has none left)."""

    member_id = models.BigIntegerField(primary_key=True)
    identified = models.BooleanField()
    analysed = models.BooleanField()
    event_days = ArrayField(models.DateField())
    event_channels = ArrayField(models.TextField())
    event_stores = ArrayField(models.TextField())
    event_counts = ArrayField(models.IntegerField())
    order_days = ArrayField(models.DateField())
    order_channels = ArrayField(models.TextField())
    order_stores = ArrayField(models.TextField())
    order_counts = ArrayField(models.IntegerField())
    order_nets = ArrayField(models.DecimalField(max_digits=20, decimal_places=2))

    def __str__(self) -> str:
        return f"facts of member {self.member_id}"


class MemberFunnelEvents(models.Model):
    """The events a funnel can use of one resolved member and one event name
    (``members.insights.funnel_events``), packed as parallel arrays in the member's order of
    events (time, then event id): ``ranks`` (the event's place in that order among all the
    member's named events, from 1), ``times`` (microseconds since the Unix epoch), ``channels``
    and ``stores``. Funnels read these instead of the event log while they are up to date
    (``funnel_events.READY_SQL``); rebuilt per changed member by the rollup job and whole
    by the nightly. Derived: ``manage.py compute_insights`` rebuilds it."""

    pk = models.CompositePrimaryKey("event", "member_id")
    event = models.TextField()
    member_id = models.BigIntegerField()
    ranks = ArrayField(models.IntegerField())
    times = ArrayField(models.BigIntegerField())
    channels = ArrayField(models.TextField())
    stores = ArrayField(models.TextField())

    class Meta:
        # A member's rows are rebuilt together: found by member, not by event name first.
        indexes = [models.Index(fields=["member_id"], name="insights_funnelev_member")]

    def __str__(self) -> str:
        return f"{self.event} events of member {self.member_id}"


class DailyRollup(models.Model):
    """The KPI columns of one day, per channel and store (``'*'``: all of them)."""

    day = models.DateField()
    channel = models.CharField(max_length=16)
    store_code = models.CharField(max_length=64)
    locals().update(_figures())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "channel", "store_code"], name="insights_daily_unique")
        ]
        # The one permission of the board and the insights API (roles ``analyst``, ``marketing``).
        permissions = [("view_insights", "Can view insights: KPIs, funnels, attribution, cohorts")]

    def __str__(self) -> str:
        return f"{self.day} ({self.channel}/{self.store_code})"


class PointsRollup(models.Model):
    """Points moved on one day, per channel of the ledger row (``'*'``: all)."""

    day = models.DateField()
    channel = models.CharField(max_length=16)
    issued = models.BigIntegerField(default=0)
    redeemed = models.BigIntegerField(default=0)
    expired = models.BigIntegerField(default=0)
    net = models.BigIntegerField(default=0, help_text="Every row's points: the change in the liability.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "channel"], name="insights_points_unique")]

    def __str__(self) -> str:
        return f"points on {self.day} ({self.channel})"


class CouponRollup(models.Model):
    """Coupons issued (``redeeming_channel = '*'``) and redeemed on one day, by the channel of
    issue (the campaign's only channel, or ``any``) and of redemption."""

    day = models.DateField()
    issuing_channel = models.CharField(max_length=16)
    redeeming_channel = models.CharField(max_length=16)
    issued = models.BigIntegerField(default=0)
    redeemed = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "issuing_channel", "redeeming_channel"], name="insights_coupons_unique"
            )
        ]

    def __str__(self) -> str:
        return f"coupons on {self.day} ({self.issuing_channel} -> {self.redeeming_channel})"


# --- Funnels, attribution and channel ROI -------------------------------------------------------


class Funnel(models.Model):
    """A saved funnel (``members.insights.funnels``): ordered steps, each an event name and the
    rule language's ``where``, a conversion window and an optional breakdown. Computed on
    request over a date range; nothing about members is stored here."""

    name = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=500, blank=True)
    steps = models.JSONField(help_text='[{"event": "Product Viewed", "where": {"channel": "app"}}, ...]')
    window_hours = models.PositiveIntegerField(default=7 * 24)
    breakdown = models.CharField(max_length=16, blank=True)
    segments = models.JSONField(default=list, blank=True, help_text="Segment keys of a segment breakdown.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(window_hours__gte=1, window_hours__lte=90 * 24), name="funnel_window_in_range"
            )
        ]

    def __str__(self) -> str:
        return self.name


class CampaignSpend(models.Model):
    """Money spent on a channel (and a campaign, "" for the channel as a whole) over whole days
    ``[period_start, period_end]``: the cost side of channel ROI (``members.insights.spend``)."""

    channel = models.CharField(max_length=16)
    campaign = models.CharField(max_length=200, blank=True)
    period_start = models.DateField()
    period_end = models.DateField()
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_start", "channel", "campaign", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="spend_not_negative"),
            models.CheckConstraint(
                condition=Q(period_end__gte=models.F("period_start")), name="spend_period_ordered"
            ),
            models.CheckConstraint(
                condition=Q(channel__in=["pos", "app", "mini_program", "web"]), name="spend_channel_known"
            ),
        ]
        indexes = [models.Index(fields=["period_start", "period_end"], name="spend_by_period")]

    def __str__(self) -> str:
        return f"{self.channel} {self.campaign or '(all)'} {self.period_start}..{self.period_end}: {self.amount} {self.currency}"
