"""An unmodified Segment SDK (analytics-python) talks to our server as it would to Segment."""

import pytest
from segment.analytics import Client
from segment.analytics.request import APIError

from events.models import Event, PendingEvent
from tests.factories import SourceFactory


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_python_client_events_are_stored(live_server, gzip):
    source = SourceFactory(pos=True, store_code="S009")
    errors = []
    client = Client(
        write_key=source.write_key,
        host=live_server.url,
        sync_mode=True,
        gzip=gzip,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )

    client.identify("member-1", {"phone": "13800138000", "name": "Han Meimei"})
    client.track(
        "member-1",
        "Order Completed",
        {
            "order_id": "POS-1",
            "total": 259.0,
            "currency": "CNY",
            "products": [{"sku": "T-1", "price": 259.0}],
        },
    )
    client.page(anonymous_id="anon-7", name="Home", properties={"path": "/"})
    client.alias("anon-7", "member-1")
    client.flush()

    assert errors == []
    events = {event.type: event for event in Event.objects.filter(source=source)}
    assert set(events) == {"identify", "track", "page", "alias"}
    assert events["identify"].traits == {"phone": "13800138000", "name": "Han Meimei"}
    assert events["track"].properties["order_id"] == "POS-1"
    assert events["track"].store_code == "S009"
    assert events["track"].context["library"]["name"] == "analytics-python"
    assert events["track"].sent_at is not None
    assert events["alias"].previous_id == "anon-7"
    assert not PendingEvent.objects.exists()  # eager pipeline nudge


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_segment_client_with_a_bad_key_gets_401(live_server):
    client = Client(write_key="wk_wrong", host=live_server.url, sync_mode=True, max_retries=0)

    with pytest.raises(APIError) as refused:
        client.track("member-1", "Product Viewed")

    assert refused.value.status == 401
    assert not Event.objects.exists()
