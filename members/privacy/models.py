"""The privacy officer's records: people's requests (erasure, access) as jobs with a status and
what was done, and the retention runs.

No foreign key to other apps' tables: a request names its member by id (after an erasure that
id names nobody: the member is erased), and this app writes nothing but these tables; every
other app erases its own data through a service of its own (``members.privacy.services``).
"""

from django.conf import settings
from django.db import models


class PrivacyRequest(models.Model):
    """A data subject's request, or an erasure retention made: received, then done (with what
    was done, per data class) or failed (with why)."""

    class Kind(models.TextChoices):
        ERASURE = "erasure", "Erasure (a person's request)"
        ACCESS = "access", "Access (everything held, exported)"
        RETENTION = "retention", "Erasure by retention (an anonymous member with no activity)"

    class Status(models.TextChoices):
        RECEIVED = "received"
        DONE = "done"
        FAILED = "failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    member_id = models.BigIntegerField(
        help_text="The member asked about (after an erasure: a number naming nobody)."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reference = models.CharField(
        max_length=200, blank=True, help_text="The officer's reference (a ticket number); no personal data."
    )
    counts = models.JSONField(default=dict, blank=True, help_text="What was done, per data class.")
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [
            ("erase_member", "Can erase a person (a data subject's request)"),
            ("export_member", "Can export everything held about a person (an access request)"),
        ]
        indexes = [
            models.Index(
                fields=["id"], condition=models.Q(status="received"), name="privacy_request_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of member {self.member_id} ({self.status})"


class RetentionRun(models.Model):
    """One application of the retention periods (``members.privacy.retention``): how many rows
    of each data class it deleted or stripped, and its progress log."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dry_run = models.BooleanField(default=False)
    counts = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"retention run {self.started_at:%Y-%m-%d %H:%M}" + (" (dry run)" if self.dry_run else "")


class RetentionCursor(models.Model):
    """Where the walk of a data class that proceeds by id (event payloads) got to: the next run
    goes on after it instead of reading the expired rows again."""

    data_class = models.CharField(max_length=32, unique=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.data_class} after {self.last_id}"
