"""Reads of the privacy app: everything held about a person (an access request), and the
requests for the privacy officer."""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from cdp.privacy import Masking
from cdp.selectors import audit_entries_naming
from events.selectors import events_exported
from identity.selectors import member_event_ids
from members.consent.api import StatementOutput
from members.consent.selectors import consent_history
from members.loyalty.presentation import points_json, tier_grant_json
from members.loyalty.selectors import ledger_page, points_summary, tier_grants_of
from members.presentation import profile_json
from members.privacy.models import PrivacyRequest, RetentionRun
from members.selectors import member_orders, member_profile

#: A ledger longer than this is not a person's (the export takes it whole).
LEDGER_ROWS = 1_000_000


def access_export(
    *, member_id: int, user: User | AnonymousUser, now: datetime | None = None
) -> dict[str, Any] | None:
    """Everything held about the person behind ``member_id`` (an id absorbed by a merge stands
    for its survivor), unmasked, as JSON-ready data; None for no active member. The sections:
    the profile (identifiers, traits with where they came from, figures, merges and splits,
    tags, segments, groups), every order, every event as it was sent, points (balance, ledger,
    tier and its history, the tiers granted from elsewhere, coupons), the audit entries about the person (who saw or exported
    them), every consent statement, and the sections of ``PRIVACY_EXPORT_SECTIONS``."""
    profile = member_profile(member_id=member_id)
    if profile is None:
        return None
    pk = profile.member.pk
    # Unmasked whatever the caller's role may see elsewhere: this is the person's own copy.
    masking = Masking(user, channel="api", detail="access export")
    masking.full = True
    sections: dict[str, Any] = {
        "member_id": pk,
        "exported_at": now or timezone.now(),
        "profile": profile_json(profile, masking),
        "orders": member_orders(member_id=pk),
        "events": events_exported(event_ids=member_event_ids(member_id=pk)),
        "points": points_json(
            pk,
            points_summary(member_id=pk),
            ledger_page(member_id=pk, before=None, size=LEDGER_ROWS),
            more=False,
        ),
        "consent": StatementOutput(consent_history(member_id=pk), many=True).data,
        "audit": audit_entries_naming(member_ids=[pk, *_absorbed(profile.history, pk)]),
    }
    # The tiers reached elsewhere that the tier is derived from (an imported legacy programme's).
    sections["points"]["tier_grants"] = [tier_grant_json(g) for g in tier_grants_of(member_id=pk)]
    for name, path in settings.PRIVACY_EXPORT_SECTIONS.items():
        sections[name] = import_string(path)([pk])
    return sections


def _absorbed(history: list, member_id: int) -> list[int]:
    return sorted(
        {h.absorbed_id for h in history if h.kind == "merge" and h.absorbed_id not in (None, member_id)}
    )


def privacy_requests(*, kind: str = "", status: str = "") -> QuerySet[PrivacyRequest]:
    """The requests, newest first, filtered by kind and status when given."""
    requests = PrivacyRequest.objects.select_related("requested_by").order_by("-id")
    if kind:
        requests = requests.filter(kind=kind)
    if status:
        requests = requests.filter(status=status)
    return requests


def retention_last_applied() -> datetime | None:
    """When the last retention run that was not a dry run finished (None: never)."""
    return (
        RetentionRun.objects.filter(dry_run=False, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
