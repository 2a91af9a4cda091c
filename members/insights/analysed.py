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
    placeholders, in order. ``members`` is a query of the same members' ids (column
    ``member_id``), ``members_params`` its parameters: the form for a query that tests most
    members of a range at once (one pass instead of a probe per member)."""

    test: Callable[[str], str]
    params: tuple[Any, ...]
    members: str
    members_params: tuple[Any, ...]

    def sql(self, member: str) -> tuple[str, list[Any]]:
        """The test of ``member`` and its parameters, to place in a query."""
        return self.test(member), list(self.params)

    def members_sql(self, first: str, last: str) -> tuple[str, list[Any]]:
        """The query ``members`` of the analysed members whose ids are between the SQL
        expressions ``first`` and ``last`` (both included), and its parameters: for a query
        whose members are mostly in that range, to read them all at once (``members``)."""
        return (
            f"SELECT a.member_id FROM ({self.members}) AS a WHERE a.member_id >= {first} AND a.member_id <= {last}",  # noqa: S608 - SQL of the callers, never input
            list(self.members_params),
        )
