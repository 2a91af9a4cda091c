"""Resolution rules: per identifier type, how much it counts and how many one member may hold.

Defaults are below; ``settings.IDENTITY_RULES`` overrides them per type (a dict of the
``TypeRule`` fields), so a deployment can say e.g. "a cashier terminal id never merges".
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from identity.identifiers import IdentifierType


@dataclass(frozen=True, slots=True)
class TypeRule:
    #: Higher wins: when an event would break a limit, lower-priority identifiers are dropped first.
    priority: int
    #: How many distinct values of this type one member may hold (None: no limit).
    limit: int | None
    #: False: stored on the member, never used to join two members (a shared terminal id).
    merges: bool = True


DEFAULT_TYPE_RULES: Mapping[str, TypeRule] = {
    IdentifierType.USER_ID: TypeRule(priority=100, limit=1),
    IdentifierType.WECHAT_UNIONID: TypeRule(priority=90, limit=1),
    IdentifierType.MEMBER_CARD: TypeRule(priority=80, limit=3),
    IdentifierType.PHONE: TypeRule(priority=70, limit=2),
    IdentifierType.EMAIL: TypeRule(priority=60, limit=3),
    IdentifierType.WECHAT_OPENID: TypeRule(priority=50, limit=5),
    IdentifierType.DEVICE_ID: TypeRule(priority=30, limit=5),
    IdentifierType.ANONYMOUS_ID: TypeRule(priority=20, limit=None),
}
#: Types sent in ``context.externalIds`` that no rule names.
DEFAULT_CUSTOM_RULE = TypeRule(priority=10, limit=5)


@dataclass(frozen=True, slots=True)
class Rules:
    by_type: Mapping[str, TypeRule] = field(default_factory=lambda: dict(DEFAULT_TYPE_RULES))
    custom: TypeRule = DEFAULT_CUSTOM_RULE

    def of(self, type_: str) -> TypeRule:
        return self.by_type.get(type_, self.custom)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "Rules":
        """These rules with some types' fields replaced, e.g. ``{"phone": {"limit": 1}}``."""
        by_type = dict(self.by_type)
        for type_, fields in overrides.items():
            by_type[type_] = replace(self.of(type_), **fields)
        return Rules(by_type=by_type, custom=self.custom)
