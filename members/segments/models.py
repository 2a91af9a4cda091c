"""Tags and segments: definitions, who is in them now, and who entered and left when.
The ``segments`` app's models (tables named ``members_*``, from
when segments lived in the members app)."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from members.aggregates import FIGURE_DIGITS


class Tag(models.Model):
    """A label on members: set by staff (manual), by a rule (added and removed as members
    start and stop matching), or computed by the platform (RFM group, lifecycle stage,
    channel preference)."""

    class Kind(models.TextChoices):
        MANUAL = "manual"
        RULE = "rule"
        COMPUTED = "computed"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    rule = models.JSONField(
        null=True, blank=True, help_text="For rule tags: the condition (see docs/rules.md)."
    )
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_tag"
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="rule") | Q(rule__isnull=False), name="rule_tag_has_rule"
            )
        ]

    def __str__(self) -> str:
        return self.key


class MemberTag(models.Model):
    """A tag a member carries now."""

    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_index=False)
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="members")
    added_at = models.DateTimeField(auto_now_add=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "members_membertag"
        constraints = [models.UniqueConstraint(fields=["member", "tag"], name="member_tag_once")]

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.tag_id}"


class TagChange(models.Model):
    """A tag added to or removed from a member: by whom (staff) or by what (rule, computed)."""

    class Action(models.TextChoices):
        ADDED = "added"
        REMOVED = "removed"

    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    tag = models.ForeignKey(Tag, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=8, choices=Action.choices)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "members_tagchange"

    def __str__(self) -> str:
        return f"{self.tag_id} {self.action} member {self.member_id}"


class Segment(models.Model):
    """An audience: dynamic (members matching a rule, kept fresh) or static (a list)."""

    class Kind(models.TextChoices):
        DYNAMIC = "dynamic"
        STATIC = "static"

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    rule = models.JSONField(null=True, blank=True, help_text="For dynamic segments (see docs/rules.md).")
    built_in = models.BooleanField(
        default=False, help_text="Shipped with the platform; copy it to change it."
    )
    size = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    compute_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long the last full compute took."
    )
    error = models.TextField(blank=True, help_text="Why the last compute failed, if it did.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_segment"
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="dynamic") | Q(rule__isnull=False), name="dynamic_segment_has_rule"
            )
        ]

    def __str__(self) -> str:
        return self.key


class SegmentMember(models.Model):
    """A member in a segment now. Keyset pages walk (segment, member)."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False)
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_index=False)
    entered_at = models.DateTimeField()

    class Meta:
        db_table = "members_segmentmember"
        constraints = [models.UniqueConstraint(fields=["segment", "member"], name="segment_member_once")]
        indexes = [models.Index(fields=["member"], name="segments_of_member")]

    def __str__(self) -> str:
        return f"member {self.member_id} in {self.segment_id}"


class SegmentChange(models.Model):
    """A member entering or leaving a segment: its history, and the changes feed (the id is
    the feed's cursor: increasing, never reused)."""

    class Change(models.TextChoices):
        ENTERED = "entered"
        EXITED = "exited"

    #: ``reason`` of the exits an erasure makes.
    ERASED = "erased"
    #: ``reason`` of a member's exit, for the tools of one purpose, when they withdrew (or denied)
    #: consent to it while staying in the segment; and of their entry when they grant it again.
    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_GRANTED = "consent_granted"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False)
    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    change = models.CharField(max_length=8, choices=Change.choices)
    reason = models.CharField(
        max_length=32,
        blank=True,
        db_default="",  # the feed's writers insert set-based, naming only the columns they set
        help_text="Why an exit happened when a tool must act on it: erased (the person was erased: drop "
        "everything you hold about them); consent_withdrawn / consent_granted (see purpose).",
    )
    purpose = models.CharField(
        max_length=64,
        blank=True,
        db_default="",
        help_text="Set on a change that consent made, not membership: the member is still in the segment, "
        "but withdrew (exited) or granted again (entered) consent to this purpose. Only outflows "
        "declaring the purpose hear it.",
    )
    at = models.DateTimeField()

    class Meta:
        db_table = "members_segmentchange"
        indexes = [models.Index(fields=["segment", "id"], name="segment_changes_feed")]

    def __str__(self) -> str:
        return f"member {self.member_id} {self.change} {self.segment_id} at {self.at}"


class ConsentSeen(models.Model):
    """The consent purposes a member had granted when the feed last heard of them: what the
    member refresh compares the consent in force with, to tell the tools of a purpose that a
    member still in their segments withdrew (or granted again) consent to it
    (``SegmentChange.purpose``). A member without a row had granted nothing."""

    member = models.OneToOneField(
        "members.Member", on_delete=models.CASCADE, primary_key=True, related_name="+", db_constraint=False
    )
    granted = ArrayField(models.CharField(max_length=64), default=list)

    class Meta:
        db_table = "members_consentseen"

    def __str__(self) -> str:
        return f"member {self.member_id} had granted {', '.join(self.granted) or 'nothing'}"


class SegmentsRecheck(models.Model):
    """When a member's tags and segments must be evaluated again though nothing happened: the
    earliest moment a time window of some rule (or the lifecycle stage) stops or starts
    matching them. The scheduled recheck marks the members whose moment has come."""

    member = models.OneToOneField(
        "members.Member", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    due_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "members_segmentsrecheck"

    def __str__(self) -> str:
        return f"member {self.member_id} at {self.due_at}"


class RfmCutoffs(models.Model):
    """The quintile edges of the last full RFM compute (one row): the incremental path scores a
    member against them, so a new order moves the member's RFM group within seconds and the
    nightly compute moves the edges. Each list holds the 20th, 40th, 60th and 80th
    percentiles over the members with orders; a score is 1 + how many edges the member's
    value is above."""

    recency = ArrayField(models.DateTimeField(), size=4, help_text="Last purchase moments.")
    frequency = ArrayField(models.IntegerField(), size=4, help_text="Order counts.")
    monetary = ArrayField(
        models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2), size=4, help_text="Spend."
    )
    members = models.PositiveIntegerField(help_text="Members with orders when computed.")
    computed_at = models.DateTimeField()

    class Meta:
        db_table = "members_rfmcutoffs"
        verbose_name_plural = "RFM cutoffs"

    def __str__(self) -> str:
        return f"RFM cutoffs of {self.computed_at}"


class SegmentWebhook(models.Model):
    """A marketing tool's subscription to a segment's entries and exits: the changes feed
    pushed to ``url`` in signed batches, in order, each batch retried until the receiver takes
    it (``members.segments.webhooks``).

    ``cursor`` is the id of the last change delivered (or skipped: not of the kinds asked
    for); only the worker holding the lease (``lease``, until ``leased_until``) moves it. The
    secret signs every delivery; it is kept in clear because signing needs it, and shown to
    the API only when the webhook is created."""

    class Changes(models.TextChoices):
        ENTERED = "entered"
        EXITED = "exited"
        BOTH = "both"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=100)
    changes = models.CharField(max_length=8, choices=Changes.choices, default=Changes.BOTH)
    purpose = models.CharField(
        max_length=64,
        default="marketing",
        help_text="What the receiver uses members for (a consent purpose, or marketing: every marketing "
        "purpose): an entry of a member without consent to it is left out of a delivery, and counted.",
    )
    active = models.BooleanField(default=True)
    cursor = models.BigIntegerField(default=0, help_text="Id of the last segment change delivered.")
    failures = models.PositiveIntegerField(default=0, help_text="Failed deliveries in a row.")
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="After a failure: not retried before then."
    )
    leased_until = models.DateTimeField(null=True, blank=True)
    lease = models.UUIDField(null=True, blank=True, help_text="The delivering worker's claim.")
    disabled_reason = models.CharField(max_length=300, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_segmentwebhook"
        constraints = [
            models.UniqueConstraint(fields=["segment", "url"], name="segment_webhook_url_once"),
            models.CheckConstraint(condition=Q(cursor__gte=0), name="segment_webhook_cursor_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} → {self.url}"


class WebhookDelivery(models.Model):
    """One attempt to deliver a batch of changes: the log (kept ``WEBHOOK_DELIVERY_LOG_DAYS``)."""

    # The (webhook, id) index serves the log pages and lookups by webhook.
    webhook = models.ForeignKey(
        SegmentWebhook, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    delivery_id = models.UUIDField(unique=True, help_text="Sent as the X-CDP-Delivery header.")
    first_cursor = models.BigIntegerField()
    last_cursor = models.BigIntegerField()
    count = models.PositiveIntegerField(help_text="Changes in the batch.")
    withheld = models.JSONField(
        default=dict, blank=True, help_text='Changes left out of the batch, by reason: {"no_consent": 3}.'
    )
    attempt = models.PositiveIntegerField(help_text="1 for a first try; n for the n-th try in a row.")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="None: no HTTP answer.")
    response = models.CharField(max_length=500, blank=True, help_text="The start of the receiver's answer.")
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField()
    at = models.DateTimeField(db_index=True)
    succeeded = models.BooleanField()

    class Meta:
        db_table = "members_webhookdelivery"
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["webhook", "id"], name="webhook_deliveries_log")]

    def __str__(self) -> str:
        return f"delivery {self.delivery_id} ({'ok' if self.succeeded else 'failed'})"
