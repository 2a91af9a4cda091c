"""End to end with real processes: an order posted over HTTP, a real Celery worker (Redis
broker, the real pipeline: resolution, then the member refresh), the member in its segment
within seconds, and the segment's webhook delivered to a real receiver."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from members.segments.models import Segment, SegmentMember
from members.segments.webhooks.services import webhook_create
from tests.events.test_worker_integration import broker, post_batch  # noqa: F401 - the broker fixture
from tests.factories import SourceFactory, TrackMessageFactory
from tests.processes import CeleryWorker, RedisServer, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pipeline_worker(broker: RedisServer, tmp_path) -> Iterator[CeleryWorker]:  # noqa: F811
    process = CeleryWorker(
        broker_url=broker.url, database=connection.settings_dict["NAME"], workdir=tmp_path, extra_env={}
    )
    process.start()
    yield process
    process.stop()


class Received(list):
    url = ""


@pytest.fixture
def receiver() -> Iterator[Received]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received.url = f"http://127.0.0.1:{server.server_port}/hook"
    yield received
    server.shutdown()


def test_an_order_reaches_its_segment_and_the_webhook_through_a_real_worker(
    live_server, pipeline_worker, receiver
):
    store = SourceFactory(pos=True, store_code="SH01")
    segment = Segment.objects.create(key="pos-buyers", name="Bought in a store", kind="dynamic",
                                     rule={"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30})  # fmt: skip
    webhook_create(segment=segment, url=receiver.url)
    order = TrackMessageFactory(
        event="Order Completed", userId="MC-0042", timestamp=None,
        # Consent to marketing (the legacy single trait: every marketing purpose, the webhook's default).
        context={"traits": {"phone": "13800138000", "marketing_consent": True}},
        properties={"order_id": "POS-1", "total": 300, "currency": "CNY"},
    )  # fmt: skip
    order.pop("timestamp")

    status, body = post_batch(live_server.url, store.write_key, [order])

    assert (status, body["accepted"]) == (200, 1)
    assert wait_for(lambda: SegmentMember.objects.filter(segment=segment).exists(), timeout=30), (
        pipeline_worker.output()
    )
    assert wait_for(lambda: bool(receiver), timeout=30), pipeline_worker.output()
    [delivery] = receiver
    member = SegmentMember.objects.get(segment=segment).member_id
    assert (delivery["segment"], [(c["member_id"], c["change"]) for c in delivery["changes"]]) == (
        "pos-buyers", [(member, "entered")],
    )  # fmt: skip
