"""Insights' tables: the KPI rollups and the queues that keep them incremental.

The KPI part (this block): the member-day facts (``MemberDay``), the daily rollups per channel
and store (``DailyRollup``, ``PointsRollup``, ``CouponRollup``) and what is waiting to be rolled
up (``DirtyMember``, ``DirtyDay``, ``RollupWatermark``). All derived: ``manage.py
compute_insights`` rebuilds them from members' tables.
"""

from django.db import models

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


class DirtyDay(models.Model):
    """Days whose rollups must be computed again (a member's rows changed on them, or
    ``compute_insights --since`` asked)."""

    day = models.DateField(primary_key=True)

    def __str__(self) -> str:
        return f"day {self.day} to roll up"


class RollupWatermark(models.Model):
    """How far an append-only table has been rolled up (the points ledger: its highest id)."""

    name = models.CharField(max_length=32, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} rolled up to {self.value}"


class MemberDay(models.Model):
    """One member's contribution to one day, for all channels (``channel = store_code = '*'``),
    one channel (``store_code = '*'``) or one store (``members.insights.kpis.member_days``).
    Counts and sums only; the rollups add these rows up per day, channel and store."""

    member_id = models.BigIntegerField()
    day = models.DateField()
    channel = models.CharField(max_length=16)
    store_code = models.CharField(max_length=64)
    locals().update(_figures())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["member_id", "day", "channel", "store_code"], name="insights_member_day_unique"
            )
        ]
        indexes = [models.Index(fields=["day"], name="insights_member_day_by_day")]

    def __str__(self) -> str:
        return f"member {self.member_id} on {self.day} ({self.channel}/{self.store_code})"


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
