"""Erasure in the members app: the profile goes, the figures stay.

``member_forget`` (called by ``members.privacy`` in the erasure's transaction, with the person's
members locked) deletes the person's traits and group memberships, recomputes the groups their
calls named (their calls were stripped or deleted) and removes the person's values from the
texts of a parked refresh. Orders, figures (``MemberAggregate``) and order ownership stay, under
the erased member: totals and KPIs do not change. The refresh never recomputes an erased member
(``members.services.members_recompute``), so nothing is rebuilt from the stripped events.
"""

from collections.abc import Iterable
from typing import Any

import phonenumbers
from django.conf import settings

from cdp.db import rows_delete
from cdp.redaction import Redactor
from cdp.vault import trait_open
from members.groups import groups_recompute
from members.models import GroupMembership, MemberTrait, ParkedMember


def member_personal_values(*, member_ids: Iterable[int]) -> tuple[list[str], list[str]]:
    """What the person's profile holds that an erasure must find everywhere besides their
    identifiers: (phones in E.164, texts: names and emails), from their traits."""
    phones: set[str] = set()
    texts: set[str] = set()
    name_keys = set(settings.PRIVACY_NAME_TRAITS)
    for key, stored in MemberTrait.objects.filter(member_id__in=list(member_ids)).values_list("key", "value"):
        for text in _strings(trait_open(key, stored)):
            if key in name_keys:
                texts.add(text)
            elif "@" in text and " " not in text.strip():
                texts.add(text.strip())
            elif (phone := _phone(text)) is not None:
                phones.add(phone)
    return sorted(phones), sorted(texts)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, int) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _phone(text: str) -> str | None:
    digits = sum(c.isdigit() for c in text)
    if digits < 7 or digits > 17:
        return None
    try:
        number = phonenumbers.parse(text, settings.IDENTITY_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def member_forget(*, member_ids: Iterable[int], redactor: Redactor) -> dict[str, int]:
    """Delete these members' profile (traits, group memberships) and the person's values in
    their parked refresh; recompute the groups they belonged to. Returns counts."""
    ids = sorted(set(member_ids))
    groups = list(
        GroupMembership.objects.filter(member_id__in=ids).values_list("group__group_id", flat=True).distinct()
    )
    counts = {
        "traits": rows_delete(MemberTrait, column="member", keys=ids),
        "group_memberships": rows_delete(GroupMembership, column="member", keys=ids),
    }
    groups_recompute(group_ids=groups)
    for parked in ParkedMember.objects.filter(member_id__in=ids):
        ParkedMember.objects.filter(pk=parked.pk).update(
            error=redactor.text(parked.error), traceback=redactor.text(parked.traceback)
        )
    return counts
