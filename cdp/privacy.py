"""Personal data shown to staff: masked unless the role may see it in full, and every view of
it in full recorded in the audit log."""

from collections.abc import Iterable
from typing import Any

import phonenumbers
from django.contrib.auth.models import AnonymousUser, User

from cdp.models import AuditEntry
from cdp.services import audit_record

CONTACT_PERMISSION = "members.view_contact_details"
CONTACT_TYPES = frozenset({"phone", "email"})


def sees_contact_details(user: User | AnonymousUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and user.has_perm(CONTACT_PERMISSION))


def mask_phone(phone: str) -> str:
    """``+8613800138000`` → ``138****8000``: the national number, its middle hidden."""
    try:
        digits = str(phonenumbers.parse(phone, None).national_number)
    except phonenumbers.NumberParseException:
        digits = "".join(c for c in phone if c.isdigit())
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_start = 3 if len(digits) >= 10 else 1
    return digits[:keep_start] + "*" * (len(digits) - keep_start - 4) + digits[-4:]


def mask_email(email: str) -> str:
    """``Zhang.Wei@Example.com`` → ``z***@example.com``."""
    local, at, domain = email.strip().casefold().partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_contact(type_: str, value: object) -> object:
    """The value as an agent may see it: phones and emails masked (a phone stated as a JSON
    number too, each element of a list, and an object whole), anything else as is."""
    if type_ not in CONTACT_TYPES or value is None or isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [mask_contact(type_, item) for item in value]
    if isinstance(value, dict):
        return "***"
    text = value if isinstance(value, str) else str(value)
    return mask_phone(text) if type_ == "phone" else mask_email(text)


class Masking:
    """Shows personal data as ``user`` may see it (the API and the console alike)."""

    def __init__(self, user: User | AnonymousUser | None, *, channel: str, detail: str) -> None:
        self.user, self.channel, self.detail = user, channel, detail
        self.full = sees_contact_details(user)

    def value(self, type_: str, value: Any) -> Any:
        return value if self.full else mask_contact(type_, value)

    def mapping(self, data: Any) -> Any:
        """A traits or properties object with its phone and email keys masked."""
        if self.full or not isinstance(data, dict):
            return data
        return {key: self.value(key, value) if key in CONTACT_TYPES else value for key, value in data.items()}

    def identifier(self, text: str) -> str:
        """``"type:value"`` with the value masked as its type requires."""
        type_, _, value = text.partition(":")
        return f"{type_}:{self.value(type_, value)}"

    def audit(self, member_ids: Iterable[int]) -> None:
        """Record that these members' contact details were shown in full (if they were)."""
        if self.full and (seen := list(member_ids)):
            audit_record(
                user=self.user,
                action=AuditEntry.Action.VIEW_CONTACT_DETAILS,
                member_ids=seen,
                channel=self.channel,
                detail=self.detail,
            )
