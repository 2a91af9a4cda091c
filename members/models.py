from django.db import models
from django.db.models import Q


class Member(models.Model):
    """One real person: the golden record that identity resolution attaches events to.

    A member absorbed by a merge keeps its row (status ``merged``) pointing at its survivor,
    so an id anyone stored still resolves. ``merged_into`` always names an active member.
    ``first_event_*`` is its earliest event: the canonical name of a member in the
    resolution's definition (the survivor of a merge is the member whose earliest event is
    earliest), and ``last_event_*`` tells whether a new event arrives in order.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        MERGED = "merged"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    first_event_at = models.DateTimeField()
    first_event_message_id = models.CharField(max_length=255)
    first_event_source_id = models.BigIntegerField()
    last_event_at = models.DateTimeField()
    last_event_message_id = models.CharField(max_length=255)
    last_event_source_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status="active", merged_into__isnull=True)
                | Q(status="merged", merged_into__isnull=False),
                name="member_merged_iff_survivor",
            ),
        ]

    def __str__(self) -> str:
        return f"member {self.pk}" + (f" (merged into {self.merged_into_id})" if self.merged_into_id else "")
