"""Template filters of the staff console: words for people where the data has names for
machines (``{% load console %}``)."""

import json

from django import template

from members.presentation import identifier_label

register = template.Library()


@register.filter(name="identifier_label")
def identifier_label_filter(type_: str) -> str:
    """``{{ "wechat_unionid"|identifier_label }}`` → ``WeChat unionid``."""
    return identifier_label(str(type_))


@register.filter
def identifier_text(text: str) -> str:
    """A ``type:value`` identifier as a person reads it: ``phone:+86…`` → ``Phone +86…``."""
    type_, colon, value = str(text).partition(":")
    return f"{identifier_label(type_)} {value}" if colon else str(text)


@register.filter
def trait_text(value: object) -> str:
    """A trait's value as a person reads it: text and numbers as they are, an object or a list
    (a ``consent`` trait, an address) as compact JSON, not Python's ``{'a': True}``."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return "" if value is None else str(value)
