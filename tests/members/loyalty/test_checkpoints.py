"""Points derivations resumed from checkpoints (``services.points_refresh``): a member who only
gained later events has their points derived from those events and where their last derivation
stood, and the result is what replaying their whole history gives; whatever the checkpoint
stood on changing (facts, the program, a corrupt state) sends the member back to the replay."""

import zlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.contrib.auth.models import AnonymousUser

from cdp.metrics import POINTS_DERIVATIONS
from cdp.redaction import Redactor
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.erasure import loyalty_forget
from members.loyalty.models import EarnRule, PointsCheckpoint, PointsEntry
from members.loyalty.services import points_adjust
from members.models import Member
from members.services import members_rebuild
from tests.factories import EventFactory, SourceFactory

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def _derived(how: str) -> float:
    return POINTS_DERIVATIONS.labels(how)._value.get()


def _order(source, number: str, total: int, days: int, *, event: str = "Order Completed") -> None:
    EventFactory(source=source, user_id="u-cp", event=event, timestamp=T0 + timedelta(days=days),
                 properties={"order_id": number, "total": total, "currency": "CNY"})  # fmt: skip
    events_process_pending()


def _ledger() -> set[tuple]:
    return set(PointsEntry.objects.values_list("id", "member_id", "cause_key", "points"))


@pytest.fixture
def expiring_program() -> None:
    EarnRule.objects.create(
        name="a month to spend them", expiry="days", expiry_days=30, first_purchase_bonus=10
    )


def test_later_orders_and_refunds_resume_and_agree_with_the_replay(expiring_program):
    store, app = SourceFactory(pos=True), SourceFactory(kind="app")
    _order(store, "R-1", 100, 0)
    member = EventResolution.objects.get().member_id
    assert PointsCheckpoint.objects.filter(member_id=member).exists()
    resumed, replayed = _derived("resumed"), _derived("replayed")

    _order(store, "R-2", 200, 20)
    _order(app, "R-1", 40, 25, event="Order Refunded")  # returned through the app: the store's order
    _order(store, "R-3", 50, 60)  # after R-1's and R-2's points expired

    assert (_derived("resumed") - resumed, _derived("replayed") - replayed) == (3, 0)
    causes = {cause for (cause,) in PointsEntry.objects.values_list("cause_key")}
    assert any(cause.startswith("reverse:") for cause in causes)
    # By the real clock every lot has expired: each a cause of the tail of the derivation before.
    assert sum(1 for cause in causes if cause.startswith("expire:")) == 4
    resumed_ledger = _ledger()
    members_rebuild()
    assert _ledger() == resumed_ledger  # the replay finds nothing to correct


def test_a_fact_recorded_since_the_checkpoint_sends_the_member_to_the_replay(expiring_program):
    store = SourceFactory(pos=True)
    _order(store, "F-1", 100, 0)
    member = Member.objects.get(pk=EventResolution.objects.get().member_id)
    points_adjust(member=member, points=30, reason="gift", idempotency_key="gift-1", user=AnonymousUser())
    events_process_pending()
    replayed = _derived("replayed")

    _order(store, "F-2", 100, 10)

    assert _derived("replayed") - replayed == 1
    ledger = _ledger()
    members_rebuild()
    assert _ledger() == ledger


def test_a_checkpoint_of_another_program_or_that_cannot_be_read_is_not_resumed(expiring_program):
    store = SourceFactory(pos=True)
    _order(store, "P-1", 100, 0)
    EarnRule.objects.update(first_purchase_bonus=20)  # (an edited rule's members are rebuilt anyway)
    replayed = _derived("replayed")
    _order(store, "P-2", 100, 5)
    assert _derived("replayed") - replayed == 1

    PointsCheckpoint.objects.update(state=b"not a replay")
    _order(store, "P-3", 100, 6)
    assert _derived("replayed") - replayed == 2
    ledger = _ledger()
    members_rebuild()
    assert _ledger() == ledger


def test_a_checkpoint_of_an_older_format_sends_the_member_to_the_replay_once(expiring_program):
    """Format 3 kept the whole state compressed in ``state``, with no cold part: after the
    upgrade, the member's next refresh replays their history and writes today's format,
    from which the refresh after resumes."""
    store = SourceFactory(pos=True)
    _order(store, "U-1", 100, 0)
    old = {"format": 3, "orders": [], "lots": [], "dormant": [], "debt": 0, "credited": 0}
    PointsCheckpoint.objects.update(state=zlib.compress(orjson.dumps(old), 1), cold=None)
    resumed, replayed = _derived("resumed"), _derived("replayed")

    _order(store, "U-2", 100, 5)
    assert (_derived("resumed") - resumed, _derived("replayed") - replayed) == (0, 1)
    assert PointsCheckpoint.objects.get().cold is not None
    _order(store, "U-3", 100, 6)
    assert (_derived("resumed") - resumed, _derived("replayed") - replayed) == (1, 1)
    ledger = _ledger()
    members_rebuild()
    assert _ledger() == ledger


def test_an_erasure_takes_the_checkpoint_with_it():
    _order(SourceFactory(pos=True), "E-1", 100, 0)
    member = EventResolution.objects.get().member_id
    assert PointsCheckpoint.objects.filter(member_id=member).exists()

    loyalty_forget(member_ids=[member], redactor=Redactor())

    assert not PointsCheckpoint.objects.filter(member_id=member).exists()
