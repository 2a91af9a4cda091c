from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models


class ApiToken(models.Model):
    """A staff API token. Only its hash is stored; the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    key_prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user}, {self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEntry(models.Model):
    """Who saw or changed personal data, when, through what. Append-only."""

    class Action(models.TextChoices):
        VIEW_CONTACT_DETAILS = "view_contact_details", "Saw phone numbers and emails unmasked"
        SPLIT_MEMBER = "split_member", "Split a member"
        EXPORT_SEGMENT = "export_segment", "Exported a segment's members"
        REPLAY_PARKED = "replay_parked", "Replayed parked events or members"
        RECORD_CONSENT = "record_consent", "Recorded a member's consent"
        ISSUE_COUPONS = "issue_coupons", "Issued a campaign's coupons"
        ERASE_MEMBER = "erase_member", "Asked for a person's erasure"
        EXPORT_MEMBER = "export_member", "Exported everything held about a person (access request)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=32, choices=Action.choices)
    member_ids = ArrayField(models.BigIntegerField(), default=list)
    channel = models.CharField(max_length=16, help_text="api or console")
    detail = models.CharField(max_length=255, blank=True, help_text="What was looked at, e.g. the path.")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.user}: {self.action} {self.member_ids}"


class ParkedWork(models.Model):
    """What a pipeline stage failed on (not a transient database error), taken out of its queue
    so that the work behind it goes on: an event (``events.ParkedEvent``) or a member's
    refresh (``members.ParkedMember``).

    Replayed after a fix (``replay_failed``, the staff API): the replay queues the work again
    and sets ``replayed_at``, in one transaction, so a replay runs once. Work that fails again
    is parked again on the same row: ``attempts`` counts its failures, and ``replayed_at`` is
    cleared. A row with ``replayed_at`` set is history, no longer parked.
    """

    error = models.TextField()
    traceback = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
