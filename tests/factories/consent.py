"""Consent statements written directly, for tests of what reads consent (statements made the
way production makes them come from events: ``tests/members/consent``)."""

from collections.abc import Iterable
from datetime import UTC, datetime

from django.conf import settings

from members.consent.models import ConsentStatement

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def consent_state(
    member_ids: Iterable[int],
    state: str = "granted",
    *,
    purposes: Iterable[str] | None = None,
    at: datetime = T0,
) -> list[ConsentStatement]:
    """Record (as staff would) ``state`` for each of ``purposes`` (every configured purpose by
    default) on each member, at ``at``."""
    wanted = list(settings.CONSENT_PURPOSES if purposes is None else purposes)
    return ConsentStatement.objects.bulk_create(
        ConsentStatement(
            member_id=m, subject_id=m, purpose=p, state=state, at=at, origin="staff", channel="staff"
        )
        for m in member_ids
        for p in wanted
    )


def consent_grant(member_ids: Iterable[int], **options: object) -> list[ConsentStatement]:
    return consent_state(member_ids, "granted", **options)  # type: ignore[arg-type]
