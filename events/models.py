from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from cdp.models import ParkedWork


class Channel(models.TextChoices):
    """Where a customer was when they acted; it comes from the source, never the payload."""

    POS = "pos", "Store (POS)"
    APP = "app", "App"
    MINI_PROGRAM = "mini_program", "Mini-program"
    WEB = "web", "Web shop"


class EventType(models.TextChoices):
    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    ALIAS = "alias"
    GROUP = "group"


def platform_currency() -> str:
    """A new source's default currency: the platform's (``CDP_CURRENCY``)."""
    return settings.CDP_CURRENCY


currency_code = RegexValidator(r"^[A-Z]{3}$", "A three-letter ISO 4217 code in capitals, e.g. CNY.")


class ErasureRule(models.TextChoices):
    """What erasing a person does to the events a source sent about them."""

    STRIP = "strip", "Keep them for the figures, with the personal data removed"
    DELETE = "delete", "Delete them"


class Source(models.Model):
    """One sender of events (a store's POS, the app, ...), holding one write key."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Channel.choices)
    store_code = models.CharField(max_length=64, blank=True)
    wechat_appid = models.CharField(
        max_length=64, blank=True, help_text="A mini-program's appid: its openids are unique only within it."
    )
    default_currency = models.CharField(
        max_length=3,
        default=platform_currency,
        validators=[currency_code],
        help_text="The currency of its Order Completed / Order Refunded events that name none (the "
        "Segment spec makes currency optional); such events are marked as defaulted.",
    )
    erasure = models.CharField(
        max_length=8,
        choices=ErasureRule.choices,
        default=ErasureRule.STRIP,
        help_text="When a person is erased (or an event arrives for an erased person): strip: their "
        "events stay for totals and KPIs without any personal data; delete: their events are deleted "
        "(the orders and points already computed from them stay, under the erased member).",
    )
    write_key_hash = models.CharField(max_length=64, unique=True)
    write_key_prefix = models.CharField(max_length=16)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind=Channel.POS, store_code__gt="") | (~Q(kind=Channel.POS) & Q(store_code="")),
                name="source_store_code_iff_pos",
                violation_error_message="A POS source needs a store code; other kinds have none.",
            ),
        ]

    def __str__(self) -> str:
        store = f" {self.store_code}" if self.store_code else ""
        return f"{self.name} ({self.kind}{store})"


class Event(models.Model):
    """An accepted event, append-only, exactly as the source sent it (plus when it arrived).

    Every insert also puts the event in the pipeline's queue (``PendingEvent``), by a
    database trigger, until a worker has run every pipeline stage on it.
    """

    id = models.BigAutoField(primary_key=True)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="+", db_index=False)
    message_id = models.CharField(max_length=255)
    type = models.CharField(max_length=16, choices=EventType.choices)
    event = models.CharField(max_length=255, blank=True)
    name = models.CharField(max_length=255, blank=True)
    user_id = models.CharField(max_length=255, blank=True)
    anonymous_id = models.CharField(max_length=255, blank=True)
    previous_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    store_code = models.CharField(max_length=64, blank=True)
    timestamp = models.DateTimeField(help_text="When it happened, corrected for client clock skew.")
    original_timestamp = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    context = models.JSONField(default=dict)
    traits = models.JSONField(default=dict)
    properties = models.JSONField(default=dict)
    integrations = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "message_id"], name="event_message_once_per_source"),
        ]
        indexes = [
            # The member refresh recomputes a group from every group call naming it (members.groups).
            models.Index(fields=["group_id"], name="event_group_calls", condition=Q(type="group")),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event or self.name} ({self.message_id})"


class PendingEvent(models.Model):
    """The pipeline's outbox: an accepted event no worker has processed yet.

    A statement-level trigger on the event table (migration ``0003``) adds every inserted
    event, whatever inserts it (the ingestion statement, the ORM, ``COPY``), in the same
    statement; the pipeline's claim deletes the rows of the batch it processes, in the
    transaction that processes it. A narrow queue of its own instead of a "processed" column
    on the event: marking an event processed rewrote the whole event row and its index
    entries, the largest single cost the pipeline put on PostgreSQL, and left every event
    table twice its size.
    """

    # No database foreign key: the trigger inserts the row with its event, and Django still
    # cascades deletes.
    event = models.OneToOneField(
        Event, primary_key=True, on_delete=models.CASCADE, related_name="pending", db_constraint=False
    )

    def __str__(self) -> str:
        return f"event {self.event_id} (pending)"


class RejectedEvent(models.Model):
    """An event (or whole request) we refused, kept with the reason for inspection."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+")
    received_at = models.DateTimeField()
    endpoint = models.CharField(max_length=16)
    batch_index = models.PositiveIntegerField(null=True, blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    code = models.CharField(max_length=40)
    reason = models.TextField()
    errors = models.JSONField(default=list)
    payload = models.JSONField(
        null=True, blank=True, help_text="The message, when it was JSON and small enough."
    )
    raw_excerpt = models.TextField(
        blank=True, help_text="The start of the body, when it was not usable JSON."
    )

    class Meta:
        indexes = [models.Index(fields=["source", "-id"], name="rejected_by_source")]

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class ParkedEvent(ParkedWork):
    """An event a pipeline stage failed on, out of the queue so that the events after it go on
    (``events.pipeline``); replayed by putting it back in the queue (``cdp.models.ParkedWork``)."""

    event = models.OneToOneField(Event, on_delete=models.CASCADE, related_name="+")
    stage = models.CharField(max_length=255, help_text="The dotted path of the stage that failed.")

    class Meta(ParkedWork.Meta):
        permissions = [("replay_parkedevent", "Can replay parked events after a fix")]
        indexes = [
            # What /health/ counts and the staff API lists: the parked ones, newest first.
            models.Index(fields=["-id"], condition=Q(replayed_at__isnull=True), name="parkedevent_parked"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} parked at {self.stage}"
