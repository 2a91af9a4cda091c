"""Insights' own tables: what staff define (saved funnels, marketing spend). Everything else the
app answers is computed from identity's and members' tables on request or into rollups."""

from django.conf import settings
from django.db import models
from django.db.models import Q

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
