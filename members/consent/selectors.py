"""Reads of consent: the statements in force at a moment, the history, and which members may be
reached for a purpose (what every outflow asks at the moment data leaves)."""

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet

from cdp.db import binary_parameters_cursor
from members.consent.models import ConsentStatement
from members.consent.statements import ConsentFact, declared_purposes

_TABLE = ConsentStatement._meta.db_table


def consent_granted_sql(member: str) -> str:
    """A SQL boolean over the member id expression ``member``: every purpose of the first
    parameter (a text array) is granted in force at the second (a timestamp). Each purpose is
    one probe of the ``consent_in_force`` index; no purposes is true. ``%s`` placeholders
    (Django's cursor); ``member`` must be a column name, never input."""
    return (
        "NOT EXISTS (SELECT 1 FROM unnest(%s::text[]) AS cp(purpose) WHERE coalesce(("  # noqa: S608 - a model table and a column name
        f"SELECT cs.state FROM {_TABLE} AS cs WHERE cs.member_id = {member} AND cs.purpose = cp.purpose "
        "AND cs.at <= %s ORDER BY cs.at DESC, cs.id DESC LIMIT 1), '') <> 'granted')"
    )


def consent_granted_members_sql() -> str:
    """``consent_granted_sql`` as a set: a query of the members (column ``member_id``) whose
    every purpose of the first parameter (a text array, not empty) is granted in force at the
    second (a timestamp); the third is the first again. The same members as the per-member
    test, read in one pass of the ``consent_in_force`` index in member order, for a query that
    tests most members of a range: one probe per member costs more (a funnel from the summary:
    about a third of its CPU). Put ``member_id`` bounds around it (``WHERE member_id >= ...``):
    the planner takes them into the index scan, so a range of members reads that range only.
    (``>=``: a member has at most one latest statement per purpose asked, so it is ``=``; the
    planner estimates ``>=`` as a third of the members, ``=`` as almost none, which invites a
    nested loop that reads the set again for each member of a large query.)"""
    return (
        "SELECT cs.member_id FROM (SELECT DISTINCT ON (cs.member_id, cs.purpose) cs.member_id, cs.state"  # noqa: S608 - a model table
        f" FROM {_TABLE} AS cs WHERE cs.purpose = ANY(%s::text[]) AND cs.at <= %s"
        " ORDER BY cs.member_id, cs.purpose, cs.at DESC, cs.id DESC) AS cs GROUP BY cs.member_id"
        " HAVING count(*) FILTER (WHERE cs.state = 'granted') >= (SELECT count(DISTINCT p) FROM unnest(%s::text[]) AS p)"
    )


_GRANTED_OF = "SELECT k.id FROM unnest(%b::bigint[]) AS k(id) WHERE " + consent_granted_sql(  # noqa: S608
    "k.id"
).replace("%s", "%b")


def members_with_consent(*, member_ids: Iterable[int], purposes: Sequence[str], at: datetime) -> set[int]:
    """Which of these members have every one of ``purposes`` granted in force at ``at`` (one
    statement per 10,000 members)."""
    ids = sorted(set(member_ids))
    found: set[int] = set()
    with binary_parameters_cursor() as cursor:
        for start in range(0, len(ids), 10_000):
            cursor.execute(_GRANTED_OF, [ids[start : start + 10_000], list(purposes), at])
            found.update(row[0] for row in cursor.fetchall())
    return found


def purposes_declared(declared: str) -> tuple[str, ...] | None:
    """The purposes an outflow declared as ``declared`` must have granted (a configured
    purpose, or ``marketing``: every marketing purpose), or None if it is neither."""
    return declared_purposes(declared, settings.CONSENT_PURPOSES)


def consent_facts(*, member_ids: Collection[int]) -> dict[int, tuple[ConsentFact, ...]]:
    """Every statement these members hold, as rules read them (one query)."""
    if not member_ids:
        return {}
    found: dict[int, list[ConsentFact]] = defaultdict(list)
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT member_id, purpose, state, at, id FROM {_TABLE} WHERE member_id = ANY(%b::bigint[])",  # noqa: S608
            [sorted(member_ids)],
        )
        for member_id, purpose, state, at, pk in cursor.fetchall():
            found[member_id].append(ConsentFact(purpose, state, at, pk))
    return {member_id: tuple(facts) for member_id, facts in found.items()}


@dataclass(frozen=True, slots=True)
class PurposeConsent:
    """A purpose's consent at a moment: the statement in force (None: never stated, so not
    granted)."""

    purpose: str
    statement: ConsentStatement | None

    @property
    def granted(self) -> bool:
        return self.statement is not None and self.statement.state == ConsentStatement.State.GRANTED


def consent_in_force(*, member_id: int, at: datetime) -> list[PurposeConsent]:
    """Each configured purpose's consent of the member at ``at``, in the configured order (one
    query: the latest statement per purpose at or before ``at``)."""
    latest = (
        ConsentStatement.objects.filter(member_id=member_id, at__lte=at)
        .order_by("purpose", "-at", "-id")
        .distinct("purpose")
        .select_related("recorded_by")
    )
    by_purpose = {s.purpose: s for s in latest}
    return [PurposeConsent(p, by_purpose.get(p)) for p in settings.CONSENT_PURPOSES]


def consent_history(*, member_id: int, purpose: str = "") -> QuerySet[ConsentStatement]:
    """The member's statements, newest (by event time) first; of one purpose if given."""
    statements = ConsentStatement.objects.filter(member_id=member_id).select_related("recorded_by")
    if purpose:
        statements = statements.filter(purpose=purpose)
    return statements.order_by("-at", "-id")
