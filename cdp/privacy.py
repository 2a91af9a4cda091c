"""Personal data shown to staff or given out: the one place that decides what is masked and
audited, for the API, the console and exports alike. (Which members an outflow leaves out
is consent's to say: ``members.consent``.)

What is personal is ``cdp.personal``'s answer under ``settings.PERSONAL_DATA_KEYS`` (keys such
as ``mobile``, ``emails``, ``contact``, ``traits.name``) and by value (anything that is a phone
number or an email address, at any depth). A role holding ``members.view_contact_details``
sees it in full, and every view that gave some of it in full is in the audit log, naming the
fields; any other role sees it masked (``138****8000``, ``z***@example.com``, ``Z***``).
"""

import functools
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User

from cdp.models import AuditEntry
from cdp.personal import (
    Finding,
    Path,
    PersonalPolicy,
    key_name,
    mask_email,
    mask_phone,
    path_text,
    personal_find,
    personal_mask,
)
from cdp.services import audit_record

CONTACT_PERMISSION = "members.view_contact_details"
CONTACT_TYPES = frozenset({"phone", "email"})

__all__ = ["CONTACT_PERMISSION", "CONTACT_TYPES", "Masking", "mask_contact", "personal_policy"]


def personal_policy() -> PersonalPolicy:
    """The policy the settings describe (built once per distinct setting)."""
    return _policy(tuple(settings.PERSONAL_DATA_KEYS), settings.IDENTITY_DEFAULT_REGION or None)


@functools.lru_cache(maxsize=8)
def _policy(keys: tuple[str, ...], region: str | None) -> PersonalPolicy:
    return PersonalPolicy.build(keys, default_region=region)


def sees_contact_details(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(
        isinstance(user, User)
        and user.is_authenticated
        and user.is_active
        and user.has_perm(CONTACT_PERMISSION)
    )


def mask_contact(type_: str, value: object) -> object:
    """A phone or email identifier as an agent may see it: masked (a phone stated as a JSON
    number too, each element of a list, and an object whole), anything else as is."""
    if type_ not in CONTACT_TYPES or value is None or isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [mask_contact(type_, item) for item in value]
    if isinstance(value, dict):
        return "***"
    text = value if isinstance(value, str) else str(value)
    return mask_phone(text) if type_ == "phone" else mask_email(text)


def field_name(finding: Finding) -> str:
    """A finding's path as the audit log names a field: list positions left out
    (``traits.emails[1]`` → ``traits.emails``)."""
    return path_text(tuple(part for part in finding.path if isinstance(part, str)))


class Masking:
    """Shows personal data as ``user`` may see it, and remembers what it gave in full so that
    ``audit`` records exactly that (and nothing when nothing personal was given)."""

    def __init__(self, user: AbstractBaseUser | AnonymousUser | None, *, channel: str, detail: str) -> None:
        self.user, self.channel = user, channel
        self.detail = unquote(detail)  # a path: "?phone=%2B86…" reads as the phone, to be masked
        self.full = sees_contact_details(user)
        self.policy = personal_policy()
        self.shown_in_full: set[str] = set()
        self.given = 0  # personal values given so far, masked or in full

    def document(self, data: Any, *, at: Path) -> Any:
        """``data`` (traits, properties, a field's value, a trait's value), found at ``at``
        (``("traits", "mobile")``): as is for a role that sees contact details, otherwise a
        copy with every personal value masked."""
        if data is None or isinstance(data, bool):
            return data
        if self.full:
            found = personal_find(data, self.policy, at=at)
            self.shown_in_full.update(field_name(f) for f in found)
            self.given += len(found)
            return data
        masked = personal_mask(data, self.policy, at=at)
        self.given += len(masked.found)
        return masked.value

    def personal_by_key(self, at: Path) -> bool:
        """Whether whatever sits at ``at`` is personal by its key (``traits.mobile``)."""
        return self.policy.key_is_personal(tuple(key_name(part) for part in at if isinstance(part, str)))

    def value(self, type_: str, value: Any) -> Any:
        """An identifier's value (``phone``, ``email``, ``member_card``, ...)."""
        return self.document(value, at=(type_,))

    def mapping(self, data: Any, *, at: Path = ()) -> Any:
        """A traits or properties object (``at``: where it sits, ``("traits",)``)."""
        return self.document(data, at=at)

    def identifier(self, text: str) -> str:
        """``"type:value"`` with the value masked as its type requires."""
        type_, _, value = text.partition(":")
        return f"{type_}:{self.value(type_, value)}"

    def audit(self, member_ids: Iterable[int]) -> None:
        """Record that these members' personal data was shown in full, naming the fields (if
        any was: a role that sees it masked, or a page without any, leaves no entry). No
        member at all for data not resolved to one (a refused event's payload)."""
        if self.full and self.shown_in_full:
            audit_record(
                user=self.user,
                action=AuditEntry.Action.VIEW_CONTACT_DETAILS,
                member_ids=member_ids,
                channel=self.channel,
                detail=self.detail,
                personal_fields=sorted(self.shown_in_full),
            )
        self.shown_in_full = set()
