from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class ApiToken(models.Model):
    """A staff API token. Only its hash is stored; the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    key_prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A token may narrow its user's scope (``cdp.scopes``), never widen it; empty: as the user.
    stores = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    channels = ArrayField(models.CharField(max_length=16), default=list, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user}, {self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEntry(models.Model):
    """Who saw or changed personal data, what, when, from which address. Append-only: the
    database refuses to change or delete an entry (``audit_guard.sql``), but for an erasure,
    which may rewrite the subject column (``detail``) and nothing else, and for retention,
    which deletes entries past their period."""

    class Action(models.TextChoices):
        VIEW_CONTACT_DETAILS = "view_contact_details", "Saw personal data unmasked"
        EXPORT_SEGMENT = "export_segment", "Exported a segment's members"
        EXPORT_MEMBER = "export_member", "Exported everything held about a person (access request)"
        ERASE_MEMBER = "erase_member", "Asked for a person's erasure"
        RECORD_CONSENT = "record_consent", "Recorded a member's consent"
        SPLIT_MEMBER = "split_member", "Split a member"
        ADJUST_POINTS = "adjust_points", "Adjusted points by hand"
        ISSUE_COUPONS = "issue_coupons", "Issued a campaign's coupons"
        CHANGE_RULE = "change_rule", "Changed a segment, tag or earning rule"
        CHANGE_ROLE = "change_role", "Changed a staff user's roles or scope"
        REPLAY_PARKED = "replay_parked", "Replayed parked events or members"
        EXPORT_AUDIT = "export_audit", "Exported audit entries"
        START_IMPORT = "start_import", "Started an import of a legacy system's history"

    #: The column an erasure may rewrite (``SET LOCAL cdp.erasure = 'on'``); the trigger names it too.
    SUBJECT_COLUMNS = ("detail",)

    # PROTECT: deleting the user would rewrite its entries (SET_NULL), which the database
    # refuses; a staff user who leaves is deactivated. ``actor`` keeps the name as it was.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    actor = models.CharField(max_length=150, blank=True, help_text="The user name at the time.")
    action = models.CharField(max_length=32, choices=Action.choices)
    member_ids = ArrayField(models.BigIntegerField(), default=list, help_text="The members it concerns.")
    channel = models.CharField(max_length=16, help_text="api, console, admin or cli")
    detail = models.CharField(max_length=255, blank=True, help_text="What was looked at, e.g. the path.")
    personal_fields = ArrayField(
        models.CharField(max_length=200),
        default=list,
        help_text="The personal fields given in full (traits.mobile, phone, ...); empty when none was.",
    )
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's address.")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [
            GinIndex(fields=["member_ids"], name="audit_by_member"),
            models.Index(fields=["user", "-at"], name="audit_by_user"),
            models.Index(fields=["action", "-at"], name="audit_by_action"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor or self.user}: {self.action} {self.member_ids}"


class Region(models.Model):
    """A set of stores a manager may be scoped to (``StaffScope.regions``)."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    stores = ArrayField(models.CharField(max_length=64), default=list, help_text="Store codes.")

    def __str__(self) -> str:
        return self.name


class StaffScope(models.Model):
    """Where a staff user may look (least privilege): members seen at these stores (and those
    of the regions), in these channels, and of them only those stores' and channels' orders and
    timeline rows. Empty lists leave that side unrestricted; a user without a scope is unscoped.
    Read through ``cdp.scopes``."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_scope"
    )
    stores = ArrayField(models.CharField(max_length=64), default=list, blank=True, help_text="Store codes.")
    regions = models.ManyToManyField(Region, blank=True, related_name="+")
    channels = ArrayField(
        models.CharField(max_length=16), default=list, blank=True, help_text="pos, app, ..."
    )

    def __str__(self) -> str:
        return f"scope of {self.user}"


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
