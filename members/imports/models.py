from django.conf import settings
from django.db import models
from django.db.models import Q


class ImportJob(models.Model):
    """One file being imported: what it is, how far it got, what it found.

    ``checkpoint`` is the number of the file's last record whose outcome (rows written, or the
    problem that kept it out) is committed: it moves in the same transaction as the rows, so a
    job killed at any moment resumes right after the last batch it committed, never twice over
    a row and never skipping one. A file is known by its SHA-256: importing the same file under
    the same kind and name again finds its job (and resumes it, or says it is done)."""

    class Kind(models.TextChoices):
        MEMBERS = "members"
        ORDERS = "orders"
        REFUNDS = "refunds"
        BALANCES = "balances"
        TIERS = "tiers"
        COUPONS = "coupons"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(
        max_length=64,
        help_text="The import's name (the legacy system): its sources are import:<name>:…, its members' "
        "legacy keys <name>:<member_id>, its keys in the ledger opening:<name>:….",
    )
    file_name = models.CharField(max_length=255, help_text="The file as it was given.")
    path = models.CharField(max_length=1024, help_text="Where the file is kept while the job runs.")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField(default=0)
    mapping = models.JSONField(default=dict, blank=True)
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    checkpoint = models.BigIntegerField(
        default=0, help_text="Records done (committed), from the file's start."
    )
    line = models.BigIntegerField(default=0, help_text="The file's line the checkpoint is at.")
    lines_total = models.BigIntegerField(
        default=0, help_text="The file's lines (inflated), counted when the job was made."
    )
    rows_imported = models.BigIntegerField(default=0)
    rows_duplicate = models.BigIntegerField(default=0, help_text="Already imported (the same key).")
    rows_skipped = models.BigIntegerField(default=0, help_text="Refused for a problem, reported.")
    warnings = models.BigIntegerField(
        default=0, help_text="Values not used (an invalid phone); row imported."
    )
    error = models.TextField(blank=True, help_text="Why the job as a whole failed.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("run_import", "Can import a legacy system's history")]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "name", "sha256"], condition=Q(dry_run=False), name="import_file_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.file_name} ({self.status})"

    @property
    def progress(self) -> float:
        """0 to 1: how far into the file, by its lines."""
        if self.status == self.Status.SUCCEEDED:
            return 1.0
        return min(self.line / self.lines_total, 1.0) if self.lines_total else 0.0

    @property
    def rows_done(self) -> int:
        return self.rows_imported + self.rows_duplicate + self.rows_skipped


class ImportProblem(models.Model):
    """A row of a job's file that was refused (``skipped``) or imported with a value left unused."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="problems")
    record = models.BigIntegerField(help_text="The record's number in the file (1: the first).")
    line = models.BigIntegerField()
    field = models.CharField(max_length=255, blank=True)
    reason = models.TextField()
    skipped = models.BooleanField(default=True)

    class Meta:
        indexes = [models.Index(fields=["job", "id"], name="import_problems_of_job")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.field} {self.reason}"
