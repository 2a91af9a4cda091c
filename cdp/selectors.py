"""Reads of the shared kernel."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, Func, IntegerField, Q, Sum
from django.db.models.functions import Coalesce

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


def audit_bursts(
    *, since: datetime, actions: Iterable[str], entries: int, members: int
) -> list[tuple[str, int, int]]:
    """Staff users who, since ``since``, recorded more than ``entries`` audit entries of these
    actions, or named more than ``members`` members in them: (user name, entries, members),
    most entries first. One indexed pass over the window (``at`` is indexed)."""
    rows = (
        AuditEntry.objects.filter(at__gte=since, action__in=list(actions))
        .values("actor")
        .annotate(
            entries=Count("id"),
            members=Coalesce(Sum(Func("member_ids", function="cardinality", output_field=IntegerField())), 0),
        )
        .filter(Q(entries__gt=entries) | Q(members__gt=members))
        .order_by("-entries", "actor")
        .values_list("actor", "entries", "members")
    )
    return [(actor, n, m) for actor, n, m in rows]
