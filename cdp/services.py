"""Writes of the shared kernel: staff users with roles and scopes, their API tokens, the audit log."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from cdp.credentials import credential_hash, credential_new, credential_prefix
from cdp.middleware import current_client_address
from cdp.models import ApiToken, AuditEntry, Region, StaffScope
from cdp.personal import PersonalPolicy, personal_mask
from cdp.redaction import Redactor
from cdp.roles import Role
from cdp.staff_tokens import staff_tokens_changed

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
    """Revoke the user's active tokens of that name; returns how many. Refused from the next
    request on, in every process (an update sends no signal: ``staff_tokens_changed`` here)."""
    revoked = ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        staff_tokens_changed()
    return revoked


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


#: The setting under which the audit log's append-only guard lets an erasure rewrite the
#: subjects of entries (what was looked at: paths, details), never who did what or when.
ERASURE_SETTING = "cdp.erasure"


def audit_subjects_erase(*, redactor: Redactor) -> int:
    """Remove a person's values (any written form) from the subjects of audit entries: the
    paths and details that named them (``?phone=138...``). Who did what and when stays, and
    so do member ids (an erased member's id names nobody any more): the append-only guard
    (``cdp/audit_guard.sql``) lets nothing but ``AuditEntry.SUBJECT_COLUMNS`` change. In the erasure's
    transaction, under ``SET LOCAL cdp.erasure = 'on'``. Returns how many entries changed."""
    if not redactor:
        return 0
    subjects = AuditEntry.SUBJECT_COLUMNS
    mentioning = Q()
    for form in redactor.forms:
        for name in subjects:
            mentioning |= Q(**{f"{name}__icontains": form})
    changed = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', true)", [ERASURE_SETTING])
        for entry in AuditEntry.objects.filter(mentioning):
            updates: dict[str, Any] = {}
            for name in subjects:
                value = getattr(entry, name)
                cleaned = redactor.value(value)
                if cleaned != value:
                    field = AuditEntry._meta.get_field(name)
                    limit = getattr(field, "max_length", None)
                    updates[name] = cleaned[:limit] if limit and isinstance(cleaned, str) else cleaned
            if updates:
                AuditEntry.objects.filter(pk=entry.pk).update(**updates)
                changed += 1
        cursor.execute("SELECT set_config(%s, 'off', true)", [ERASURE_SETTING])
    return changed


def admin_log_erase(*, redactor: Redactor) -> int:
    """Remove a person's values from the admin site's change history (an edited trait's
    description names its value). Returns how many entries changed."""
    if not redactor:
        return 0
    mentioning = Q()
    for form in redactor.forms:
        mentioning |= Q(object_repr__icontains=form) | Q(change_message__icontains=form)
    changed = 0
    for entry in LogEntry.objects.filter(mentioning):
        LogEntry.objects.filter(pk=entry.pk).update(
            object_repr=redactor.text(entry.object_repr)[:200],
            change_message=redactor.text(entry.change_message),
        )
        changed += 1
    return changed


#: The setting under which the audit log's append-only guard lets retention delete entries
#: past their period (``RETENTION_AUDIT_DAYS``).
RETENTION_SETTING = "cdp.retention"


def audit_entries_expire(*, before: datetime, limit: int, dry_run: bool) -> int:
    """Delete up to ``limit`` audit entries older than ``before``, oldest first (``dry_run``:
    count all of them, delete nothing), under ``SET LOCAL cdp.retention = 'on'``. Returns how
    many."""
    old = AuditEntry.objects.filter(at__lt=before)
    if dry_run:
        return old.count()
    ids = list(old.order_by("id").values_list("pk", flat=True)[:limit])
    if ids:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, 'on', true)", [RETENTION_SETTING])
            AuditEntry.objects.filter(pk__in=ids).delete()
            cursor.execute("SELECT set_config(%s, 'off', true)", [RETENTION_SETTING])
    return len(ids)
