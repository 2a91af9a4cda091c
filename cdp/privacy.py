"""Personal data shown to staff: masked unless the role may see it in full."""

import phonenumbers
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

CONTACT_PERMISSION = "members.view_contact_details"
CONTACT_TYPES = frozenset({"phone", "email"})


def sees_contact_details(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.has_perm(CONTACT_PERMISSION))


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
    """The value as an agent may see it: phones and emails masked, anything else as is."""
    if not isinstance(value, str):
        return value
    if type_ == "phone":
        return mask_phone(value)
    if type_ == "email":
        return mask_email(value)
    return value
