"""Members and their figures written directly, for tests of what is computed from the figures
(a member built the way production builds one goes through the pipeline: see
``tests/members/conftest.py``)."""

from datetime import UTC, datetime
from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from members.models import Member, MemberAggregate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class MemberFactory(DjangoModelFactory[Member]):
    """An active member; ``merged_into=survivor`` with ``status="merged"`` for an absorbed one."""

    class Meta:
        model = Member

    first_event_at = T0
    first_event_message_id = factory.Sequence(lambda n: f"first-{n}")
    first_event_source_id = 1
    last_event_at = T0
    last_event_message_id = factory.SelfAttribute("first_event_message_id")
    last_event_source_id = 1


class MemberAggregateFactory(DjangoModelFactory[MemberAggregate]):
    """A member's figures: by default no orders; set ``orders``, ``spend``, the purchase times
    and ``orders_<channel>`` for a buyer."""

    class Meta:
        model = MemberAggregate

    member = factory.SubFactory(MemberFactory)
    currency = "CNY"
    orders = 0
    spend = Decimal("0.00")
