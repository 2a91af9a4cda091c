"""Admin of the members app: members whose refresh failed, to replay after a fix. The
loyalty program and segment webhooks are in their own apps' admin modules."""

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from cdp.admin import ReadOnlyAdmin
from cdp.models import AuditEntry
from cdp.services import audit_record
from events.tasks import process_pending_enqueue
from members.models import ParkedMember
from members.parking import parked_members_replay


@admin.register(ParkedMember)
class ParkedMemberAdmin(ReadOnlyAdmin):
    """Members whose refresh failed; select and replay them after a fix."""

    list_display = ("id", "member_id", "error", "attempts", "last_failed_at", "replayed_at")
    list_filter = (("replayed_at", admin.EmptyFieldListFilter),)
    fields = readonly_fields = (
        "member_id", "error", "traceback", "attempts", "first_failed_at", "last_failed_at", "replayed_at",
    )  # fmt: skip
    actions = ("replay",)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("members.replay_parkedmember")

    @admin.action(description="Replay (after a fix): refresh the members again", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[ParkedMember]) -> None:
        with transaction.atomic():
            member_ids = parked_members_replay(ids=list(queryset.values_list("id", flat=True)))
            if member_ids:
                audit_record(
                    user=request.user, action=AuditEntry.Action.REPLAY_PARKED, member_ids=member_ids,
                    channel="console", detail="parked members replayed",
                )  # fmt: skip
                transaction.on_commit(process_pending_enqueue)
        self.message_user(request, f"{len(member_ids)} members marked for a refresh again.")
