"""Writes of the shared kernel: staff users with roles and scopes, their API tokens, the audit log."""

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.db import connection, transaction
from django.utils import timezone

from cdp.credentials import credential_hash, credential_new, credential_prefix
from cdp.middleware import current_client_address
from cdp.models import ApiToken, AuditEntry, Region, StaffScope
from cdp.personal import PersonalPolicy, personal_mask
from cdp.roles import Role

STAFF_TOKEN_KIND = "cdp"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


@transaction.atomic
def staff_user_ensure(*, username: str, role: Role, by: User | None = None, channel: str = "cli") -> User:
    """Get or create the staff user and make ``role`` its only role (a change of roles is in
    the audit log, made by ``by``: nobody for the command line)."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    staff_roles_set(user=user, roles=[role], by=by, channel=channel)
    return user


@transaction.atomic
def staff_roles_set(*, user: User, roles: Iterable[Role], by: User | None, channel: str) -> bool:
    """Give ``user`` exactly these roles; record the change in the audit log (old and new
    roles). Returns whether anything changed."""
    wanted = sorted({Role(role).value for role in roles})
    held = sorted(user.groups.filter(name__in=Role.values).values_list("name", flat=True))
    if held == wanted:
        return False
    user.groups.remove(*Group.objects.filter(name__in=Role.values).exclude(name__in=wanted))
    for name in wanted:
        group, _ = Group.objects.get_or_create(name=name)  # the migration creates them; a flushed DB may not
        user.groups.add(group)
    role_change_record(user=user, by=by, channel=channel, change=f"roles {_names(held)} -> {_names(wanted)}")
    return True


def role_change_record(*, user: User, by: User | None, channel: str, change: str) -> None:
    """A change of a staff user's roles or scope, in the audit log."""
    audit_record(
        user=by,
        action=AuditEntry.Action.CHANGE_ROLE,
        member_ids=(),
        channel=channel,
        detail=f"user {user.get_username()}: {change}",
    )


@transaction.atomic
def staff_scope_set(
    *,
    user: User,
    stores: Iterable[str] = (),
    regions: Iterable[str] = (),
    channels: Iterable[str] = (),
    by: User | None,
    channel: str,
) -> StaffScope | None:
    """Scope ``user`` to these stores, regions (by key) and channels; nothing at all makes the
    user unscoped (the scope row goes). Recorded in the audit log when it changes. Raises
    ``ValueError`` naming an unknown region."""
    stores, channels = sorted(set(stores)), sorted(set(channels))
    region_keys = sorted(set(regions))
    found = {r.key: r for r in Region.objects.filter(key__in=region_keys)}
    if unknown := [key for key in region_keys if key not in found]:
        raise ValueError(f"unknown region(s): {', '.join(unknown)}")
    scope = StaffScope.objects.select_for_update().filter(user=user).first()
    before = scope_text(scope)
    if not (stores or region_keys or channels):
        if scope is not None:
            scope.delete()
            role_change_record(user=user, by=by, channel=channel, change=f"scope {before} -> unscoped")
        return None
    if scope is None:
        scope = StaffScope(user=user)
    scope.stores, scope.channels = stores, channels
    scope.save()
    scope.regions.set([found[key] for key in region_keys])
    after = scope_text(scope)
    if after != before:
        role_change_record(user=user, by=by, channel=channel, change=f"scope {before} -> {after}")
    return scope


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def scope_text(scope: StaffScope | None) -> str:
    """A scope as the audit log writes it: ``stores SH01; regions east; channels pos`` (a side
    left out is not restricted)."""
    if scope is None:
        return "unscoped"
    sides = {
        "stores": scope.stores,
        "regions": scope.regions.values_list("key", flat=True),
        "channels": scope.channels,
    }
    return "; ".join(f"{side} {_names(names)}" for side, names in sides.items() if names) or "unscoped"


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
    user: AbstractBaseUser | AnonymousUser | None,
    action: str,
    member_ids: Iterable[int],
    channel: str,
    detail: str = "",
    personal_fields: Iterable[str] = (),
    address: str | None = None,
) -> AuditEntry:
    """Append an audit entry (in the caller's transaction, if any): who (an anonymous user is
    recorded as nobody), what, about whom, from which address (by default the address of the
    request being served). Phones and emails in ``detail`` (a path's query, a reason) are
    masked: the members are named by id."""
    staff = user if isinstance(user, User) else None
    return AuditEntry.objects.create(
        user=staff,
        actor=staff.get_username() if staff else "",
        action=action,
        member_ids=sorted(set(member_ids)),
        channel=channel,
        detail=str(personal_mask(detail, _policy(), at=("detail",)).value)[:255],
        personal_fields=sorted(set(personal_fields)),
        address=address or current_client_address(),
    )


def _policy() -> PersonalPolicy:
    # Values only: a detail is free text, its keys mean nothing.
    return PersonalPolicy.build((), default_region=settings.IDENTITY_DEFAULT_REGION or None)


_SUBJECTS_REPLACE = """
UPDATE cdp_auditentry SET
    member_ids = ARRAY(
        SELECT DISTINCT CASE WHEN m = ANY(%(ids)s::bigint[]) THEN %(replacement)s::bigint ELSE m END AS id
        FROM unnest(member_ids) AS m
        WHERE NOT (m = ANY(%(ids)s::bigint[]) AND %(replacement)s::bigint IS NULL) ORDER BY id
    ),
    detail = regexp_replace(detail, %(pattern)s, %(instead)s, 'g')
WHERE member_ids && %(ids)s::bigint[]
"""


@transaction.atomic
def audit_subjects_replace(*, member_ids: Collection[int], replacement: int | None) -> int:
    """Erasure's one sanctioned rewrite of the audit log (``cdp/audit_guard.sql``): every entry
    naming one of ``member_ids`` names ``replacement`` instead (a pseudonymous member, or nobody
    when None), in ``member_ids`` and wherever its ``detail`` writes the id (a path). Who did
    what, when and from where stays. Sets ``cdp.erasure`` for the rest of the caller's
    transaction. Returns how many entries changed."""
    ids = sorted({int(member_id) for member_id in member_ids})
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL cdp.erasure = 'on'")
        cursor.execute(
            _SUBJECTS_REPLACE,
            {
                "ids": ids,
                "replacement": replacement,
                "pattern": r"\m(" + "|".join(map(str, ids)) + r")\M",
                "instead": "-" if replacement is None else str(int(replacement)),
            },
        )
        return cursor.rowcount
