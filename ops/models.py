"""Alert rules, the alerts they raise, where they are sent, and what was sent.

An alert is open while its rule's condition holds for its subject (a store, a staff user, a
webhook, "database"), at most one open alert per rule and subject (a partial unique index),
so a condition that keeps holding notifies once, not at every evaluation. Staff acknowledge
it (who, when); it resolves by itself when the condition stops holding, or by hand.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Level(models.TextChoices):
    """The report's three levels (§6.5.1): how soon someone must act."""

    RED = "red", "Red: failure or data leak, act within 1 hour"
    YELLOW = "yellow", "Yellow: business deviation, act within 24 hours"
    BLUE = "blue", "Blue: notice, plan ahead"


class NotifyTarget(models.Model):
    """Where alerts go: a chat webhook (Slack-compatible, WeCom or DingTalk robot JSON) or an
    email address (Django's email backend)."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    class Flavor(models.TextChoices):
        SLACK = "slack", "Slack-compatible ({text})"
        WECOM = "wecom", "WeCom robot (msgtype markdown)"
        DINGTALK = "dingtalk", "DingTalk robot (msgtype markdown, signed URL)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.URLField(max_length=2000, blank=True)
    flavor = models.CharField(max_length=8, choices=Flavor.choices, default=Flavor.SLACK)
    secret = models.CharField(
        max_length=200,
        blank=True,
        help_text="Signs each post (X-CDP-Signature; DingTalk: its own URL signature).",
    )
    email = models.EmailField(blank=True)
    enabled = models.BooleanField(default=True)
    escalation = models.BooleanField(
        default=False,
        help_text="Also told of every red alert nobody acknowledged in time, whatever its rule.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="webhook") & ~Q(url="")) | (Q(kind="email") & ~Q(email="")),
                name="notify_target_has_address",
            )
        ]

    def __str__(self) -> str:
        return self.name


class AlertRule(models.Model):
    """A condition (a name in the registry, ``ops.conditions``) with its parameters, checked over
    a window; its level; whom to tell."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    level = models.CharField(max_length=8, choices=Level.choices)
    condition = models.CharField(max_length=64, help_text="A registered condition (ops.conditions).")
    params = models.JSONField(default=dict, blank=True)
    window_minutes = models.PositiveIntegerField(default=60)
    escalate_after_minutes = models.PositiveIntegerField(
        default=30, help_text="A red alert nobody acknowledged is sent again, to the escalation targets too."
    )
    targets = models.ManyToManyField(NotifyTarget, blank=True, related_name="rules")
    enabled = models.BooleanField(default=True)
    built_in = models.BooleanField(default=False)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="Why the last evaluation of this rule failed.")

    class Meta:
        permissions = [("evaluate_alertrule", "Can evaluate alert rules now")]

    def __str__(self) -> str:
        return self.key


class Alert(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    level = models.CharField(
        max_length=8, choices=Level.choices, help_text="The rule's level when it opened."
    )
    subject = models.CharField(max_length=200, help_text="What it is about: a store, a user, a webhook, ...")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    value = models.FloatField(help_text="The measured value when last seen.")
    summary = models.CharField(max_length=500)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when it resolved by itself (the condition stopped holding).",
    )
    escalated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=~Q(status="resolved"),
                name="alert_open_once_per_subject",
            )
        ]
        indexes = [models.Index(fields=["status", "-opened_at"], name="alert_by_status")]

    def __str__(self) -> str:
        return f"{self.rule_id}/{self.subject} ({self.status})"


class AlertNotice(models.Model):
    """One notification sent (or tried) about an alert: the history."""

    class Kind(models.TextChoices):
        OPENED = "opened"
        ESCALATED = "escalated"
        RESOLVED = "resolved"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notices")
    target = models.ForeignKey(NotifyTarget, null=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} → {self.target_id} ({'ok' if self.ok else 'failed'})"


class SourceTraffic(models.Model):
    """Events and rejections per source and hour, counted by the evaluator as events arrive
    (``ops.traffic``): what "a till sent nothing" and "a source's rejected share" read, without
    scanning the event table for a window each time."""

    source_id = models.BigIntegerField()
    hour = models.DateTimeField()
    accepted = models.BigIntegerField(default=0)
    rejected = models.BigIntegerField(default=0)
    last_event_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source_id", "hour"], name="source_traffic_hour_once")]

    def __str__(self) -> str:
        return f"source {self.source_id} at {self.hour:%Y-%m-%d %H}:00"


class TrafficCursor(models.Model):
    """How far the traffic count has read the event and rejection tables (one row)."""

    last_event_id = models.BigIntegerField(default=0)
    last_rejected_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"events after {self.last_event_id}, rejections after {self.last_rejected_id}"
