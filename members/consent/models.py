from django.conf import settings
from django.db import models
from django.db.models import Q

from members.consent.statements import (
    DENIED,
    GRANTED,
    ORIGIN_EVENT,
    ORIGIN_LEGACY,
    ORIGIN_STAFF,
    ORIGIN_TRAIT,
    WITHDRAWN,
)


class ConsentStatement(models.Model):
    """A member granted, denied or withdrew consent to one purpose at a moment, under a version
    of the wording: one row of the consent history (``members.consent.statements``).

    Append-only: the database refuses to change a statement or delete one (triggers, as for
    the points ledger), but for the member holding it and for ``forget`` (erasure). A
    statement follows the member its cause belongs to: one stated by an event (``event_id``,
    unique per purpose) is held by the member the event resolves to, re-attached by the member
    refresh after a merge or a split; one recorded by staff (``recorded_by``) is held by the
    member it was recorded on (``subject_id``) or, while that member is merged, by its
    survivor.
    """

    class State(models.TextChoices):
        GRANTED = GRANTED
        DENIED = DENIED
        WITHDRAWN = WITHDRAWN

    class Origin(models.TextChoices):
        TRAIT = ORIGIN_TRAIT, "consent trait"
        LEGACY_TRAIT = ORIGIN_LEGACY, "legacy marketing consent trait"
        EVENT = ORIGIN_EVENT, "Consent Updated event"
        STAFF = ORIGIN_STAFF, "staff"

    member = models.ForeignKey(
        "members.Member", on_delete=models.PROTECT, related_name="+", db_index=False,
        help_text="The member holding it now.",
    )  # fmt: skip
    purpose = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices)
    at = models.DateTimeField(help_text="When it was stated: the event's time, or when staff recorded it.")
    version = models.CharField(max_length=64, blank=True, help_text="The version of the wording shown.")
    origin = models.CharField(max_length=16, choices=Origin.choices)
    event_id = models.BigIntegerField(null=True, blank=True, help_text="The event that stated it.")
    source_id = models.BigIntegerField(null=True, blank=True, help_text="The event's source (its write key).")
    channel = models.CharField(max_length=16, blank=True, help_text="pos, app, mini_program, web or staff.")
    store_code = models.CharField(max_length=64, blank=True, help_text="The store (till) of a POS event.")
    app = models.CharField(max_length=100, blank=True, help_text="context.app: name and version.")
    device_id = models.CharField(max_length=255, blank=True, help_text="context.device.id (a till, a phone).")
    subject_id = models.BigIntegerField(
        null=True, blank=True, help_text="Staff statements: the member id it was recorded on."
    )
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=255, blank=True, help_text="Staff: how the person stated it.")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # The consent in force: a member's latest statement per purpose at a moment.
            models.Index(fields=["member", "purpose", "-at", "-id"], name="consent_in_force"),
            models.Index(
                fields=["subject_id"], condition=Q(subject_id__isnull=False), name="consent_by_subject"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "purpose"],
                condition=Q(event_id__isnull=False),
                name="consent_once_per_event",
            ),
            models.CheckConstraint(
                condition=Q(event_id__isnull=False) | Q(subject_id__isnull=False), name="consent_has_a_cause"
            ),
        ]

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.purpose} {self.state} at {self.at:%Y-%m-%d %H:%M}"
