"""Fixtures of the members tests: a member built the way production builds one, through the
pipeline."""

from datetime import UTC, datetime, timedelta

import pytest

from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.models import Member
from tests.factories import EventFactory, SourceFactory

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)


@pytest.fixture
def zhang() -> dict:
    """Zhang Wei: a member at the Shanghai store, an app user browsing anonymously, then
    logging in (the two become one), an order in each channel and a partial refund."""
    store = SourceFactory(pos=True, store_code="SH01", name="Shanghai Nanjing Rd")
    app = SourceFactory(kind="app", name="iOS app")
    till = EventFactory.create(
        source=store, type="identify", user_id="", anonymous_id="", timestamp=T0,
        traits={"phone": "138 0013 8000", "email": " Zhang.Wei@Example.com", "name": "Zhang Wei"},
        context={"externalIds": [{"id": "MC-0042", "type": "member_card", "collection": "users"}]},
    )  # fmt: skip
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Completed", timestamp=T0 + timedelta(minutes=5),
                 traits={}, context={"traits": {"phone": "13800138000"}},
                 properties={"order_id": "POS-1", "total": "300.00", "currency": "CNY"})  # fmt: skip
    browsing = EventFactory.create(source=app, user_id="", anonymous_id="anon-7", event="Product Viewed",
                            timestamp=T0 + timedelta(days=1))  # fmt: skip
    EventFactory(source=app, user_id="", anonymous_id="anon-7", event="Order Completed",
                 timestamp=T0 + timedelta(days=1, minutes=3),
                 properties={"order_id": "APP-9", "total": 120, "currency": "CNY"})  # fmt: skip
    events_process_pending()
    app_member = EventResolution.objects.get(event=browsing).member_id
    EventFactory(source=app, type="identify", user_id="", anonymous_id="anon-7", timestamp=T0 + timedelta(days=2),
                 traits={"phone": "+86 138-0013-8000"})  # fmt: skip
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Refunded", timestamp=T0 + timedelta(days=3),
                 context={"traits": {"phone": "13800138000"}},
                 properties={"order_id": "POS-1", "total": "100.00", "currency": "CNY"})  # fmt: skip
    events_process_pending()
    member = EventResolution.objects.get(event=till).member_id
    assert Member.objects.get(pk=app_member).merged_into_id == member
    return {"member": member, "absorbed": app_member}


#: Where the browser test saved its screenshots in this run, for the summary's last lines.
SCREENSHOTS_SAVED = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if SCREENSHOTS_SAVED in config.stash:
        terminalreporter.write_line(f"Console screenshots: {config.stash[SCREENSHOTS_SAVED]}")
