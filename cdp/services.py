"""Writes of the shared kernel: staff users with roles, and their API tokens."""

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import transaction
from django.utils import timezone

from cdp.credentials import credential_hash, credential_new, credential_prefix
from cdp.models import ApiToken, AuditEntry
from cdp.roles import Role

STAFF_TOKEN_KIND = "cdp"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


@transaction.atomic
def staff_user_ensure(*, username: str, role: Role) -> User:
    """Get or create the staff user and make ``role`` its only role."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.remove(*Group.objects.filter(name__in=Role.values).exclude(name=role))
    group, _ = Group.objects.get_or_create(name=role)  # the migration creates them; a flushed DB may not
    user.groups.add(group)
    return user


def token_issue(*, user: User, name: str) -> IssuedToken:
    secret = credential_new(kind=STAFF_TOKEN_KIND)
    token = ApiToken.objects.create(
        user=user, name=name, key_hash=credential_hash(secret), key_prefix=credential_prefix(secret)
    )
    return IssuedToken(token=token, secret=secret)


def tokens_revoke(*, user: User, name: str) -> int:
    """Revoke the user's active tokens of that name; returns how many."""
    return ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def audit_record(
    *,
    user: User | AnonymousUser | None,
    action: str,
    member_ids: Iterable[int],
    channel: str,
    detail: str = "",
) -> None:
    """Append an audit entry (in the caller's transaction, if any); an anonymous user is
    recorded as nobody."""
    AuditEntry.objects.create(
        user=user if isinstance(user, User) else None,
        action=action,
        member_ids=sorted(set(member_ids)),
        channel=channel,
        detail=detail[:255],
    )
