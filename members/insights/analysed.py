"""Which members an insight may analyse, as a piece of SQL the pure insight modules (``funnels``,
``attribution``, ``cohorts``) put into their queries. Pure: it only carries the SQL; the
services build it from consent (``funnel_services.analysed_members``: purpose ``analytics``),
so the consent rule stays defined once, in ``members.consent``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AnalysedMembers:
    """``test(member)`` is a SQL boolean over the member id expression ``member`` (a column
    name, never input), true for the members that may be analysed; ``params`` fill its ``%s``
    placeholders, in order."""

    test: Callable[[str], str]
    params: tuple[Any, ...]

    def sql(self, member: str) -> tuple[str, list[Any]]:
        """The test of ``member`` and its parameters, to place in a query."""
        return self.test(member), list(self.params)
