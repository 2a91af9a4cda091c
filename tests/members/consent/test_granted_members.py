"""``consent_granted_members_sql`` (consent as a set of members, read in one pass) is
``consent_granted_sql`` (the per-member test) for any history of statements: several purposes,
statements tied in time, states changed back and forth, statements after the moment asked."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from members.consent.models import ConsentStatement
from members.consent.selectors import consent_granted_members_sql, consent_granted_sql
from members.consent.statements import STATES
from tests.factories import SourceFactory
from tests.factories.members import MemberFactory

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PURPOSES = ("analytics", "marketing_sms", "marketing_push")
MEMBERS = 4

statement_st = st.tuples(
    st.integers(0, MEMBERS - 1), st.sampled_from(PURPOSES), st.sampled_from(STATES), st.integers(0, 4)
)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    statements=st.lists(statement_st, max_size=14),
    purposes=st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=3),
    hours=st.integers(0, 5),
)
def test_the_set_of_granted_members_is_the_per_member_test(statements, purposes, hours):
    at = T0 + timedelta(hours=hours)
    with transaction.atomic():
        source = SourceFactory()
        members = [MemberFactory(first_event_source_id=source.pk, last_event_source_id=source.pk).pk
                   for _ in range(MEMBERS)]  # fmt: skip
        # Inserted in this order: ties in time are broken by id, the later statement winning.
        for member, purpose, state, hour in statements:
            ConsentStatement.objects.create(
                member_id=members[member], subject_id=members[member], purpose=purpose, state=state,
                at=T0 + timedelta(hours=hour), origin="staff", channel="staff",
            )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT k.id FROM unnest(%s::bigint[]) AS k(id) WHERE " + consent_granted_sql("k.id"),
                [members, purposes, at],
            )
            one_by_one = {row[0] for row in cursor.fetchall()}
            cursor.execute(consent_granted_members_sql(), [purposes, at, purposes])
            as_a_set = {row[0] for row in cursor.fetchall()}
            # Bounds around it (as a range of members asks) keep the members within them.
            cursor.execute(
                f"SELECT a.member_id FROM ({consent_granted_members_sql()}) AS a"
                " WHERE a.member_id >= %s AND a.member_id <= %s",
                [purposes, at, purposes, members[1], members[2]],
            )
            bounded = {row[0] for row in cursor.fetchall()}
        assert as_a_set == one_by_one
        assert bounded == {m for m in one_by_one if members[1] <= m <= members[2]}
        transaction.set_rollback(True)
