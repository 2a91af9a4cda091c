"""The contract of an alert condition, for any app to provide one (``ALERT_CONDITIONS``).

A condition is a function of a ``Check`` (its rule's parameters, window and the time) returning
the ``Finding``s that hold now, one per subject (a store, a staff user, "database"); an empty
list means everything is fine, and the evaluator (``ops.services``) resolves whatever alert
of the rule was open. ``None`` means it cannot tell now (a store's tills outside opening
hours): the rule's alerts stay as they are. Conditions read, never write, and each should cost one cheap query.

Pure: no Django here, so the kernel's contract can be imported from any layer; an app adds a
condition with ``ALERT_CONDITIONS`` (a name and its dotted path). The built-in ones, the KPI drop
among them (it reads insights' rollups: ops sits above every app), are in ``ops.conditions``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    params: Mapping[str, Any]
    window: timedelta
    now: datetime

    def number(self, name: str, default: float) -> float:
        """A numeric parameter (a bad one is the rule's error, raised as ``ConditionInvalid``)."""
        value = self.params.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConditionInvalid(f"params.{name} must be a number, not {value!r}")
        return float(value)


@dataclass(frozen=True, slots=True)
class Finding:
    subject: str
    value: float
    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class ConditionInvalid(ValueError):
    """The rule's parameters do not make sense for its condition."""


Condition = Callable[[Check], list[Finding] | None]
