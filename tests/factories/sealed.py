"""Phones, emails and names as the tables hold them (``cdp.vault``): a test that reads rows
directly compares with these, never with the plain values."""

from typing import Any

from cdp.vault import identifier_index, trait_open


def stored(type_: str, value: str) -> str:
    """An identifier's value as stored: a phone's or an email's blind index, else the value."""
    return identifier_index(type_, value)


def opened(key: str, value: Any) -> Any:
    """A trait's value as stated: opened when sealed."""
    return trait_open(key, value)
