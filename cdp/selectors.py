"""Reads of the shared kernel."""

from collections.abc import Iterable

from cdp.models import AuditEntry


def audit_entries_naming(*, member_ids: Iterable[int]) -> list[dict]:
    """The audit entries about these members (who saw, exported, split them; when; through
    what), oldest first: for an access request, which must say who processed the data."""
    ids = sorted(set(member_ids))
    return [
        {"at": at, "by": username or "", "action": action, "channel": channel, "detail": detail}
        for at, username, action, channel, detail in AuditEntry.objects.filter(member_ids__overlap=ids)
        .order_by("at", "id")
        .values_list("at", "user__username", "action", "channel", "detail")
    ]
