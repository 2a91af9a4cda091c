"""Identity's settings as its code reads them (the rules of resolution, how values are
normalized) and the one lock all identity writes take."""

from django.conf import settings
from django.db import connection

from identity.identifiers import NormalizationPolicy
from identity.rules import Rules

#: One transaction-scoped advisory lock for all identity writes. Resolution of a batch reads
#: a subgraph, decides, and writes it back; holding this lock makes that read-decide-write
#: atomic against other workers without row locks in any order, so there is no deadlock and
#: no duplicate member. On two cores one resolver at a time is also the fastest; beyond one
#: machine, the graph would be striped by component. Splits and erasures take it too.
IDENTITY_LOCK = 0x1D_E4_71_7E


def identity_lock() -> None:
    """Take the identity lock until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IDENTITY_LOCK])


def identity_rules() -> Rules:
    return Rules().with_overrides(settings.IDENTITY_RULES)


def normalization_policy() -> NormalizationPolicy:
    return NormalizationPolicy(
        default_region=settings.IDENTITY_DEFAULT_REGION,
        blocked_values=frozenset(v.casefold() for v in settings.IDENTITY_BLOCKED_VALUES),
    )
