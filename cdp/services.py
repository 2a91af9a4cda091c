"""Writes of the shared kernel: staff users with roles, their API tokens, the audit log."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from cdp.credentials import credential_hash, credential_new, credential_prefix
from cdp.models import ApiToken, AuditEntry
from cdp.redaction import Redactor
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


#: The setting under which the audit log's append-only guard lets an erasure rewrite the
#: subjects of entries (what was looked at: paths, details), never who did what or when.
ERASURE_SETTING = "cdp.erasure"


def audit_subjects_erase(*, redactor: Redactor) -> int:
    """Remove a person's values (any written form) from the subjects of audit entries: the
    paths and details that named them (``?phone=138...``). Who did what and when stays, and
    so do member ids (an erased member's id names nobody any more). In the erasure's
    transaction, under ``SET LOCAL cdp.erasure = 'on'``. Returns how many entries changed."""
    if not redactor:
        return 0
    subjects = [
        field.name
        for field in AuditEntry._meta.concrete_fields
        if isinstance(field, models.CharField | models.TextField | models.JSONField)
        and field.name not in ("action", "channel")
    ]
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
