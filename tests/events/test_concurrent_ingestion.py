"""Two POS terminals posting the same events at the same moment store them once."""

import threading

import orjson
import pytest
from django.db import connection
from django.test import Client

from events.models import Event
from tests.conftest import basic_auth
from tests.factories import SourceFactory, TrackMessageFactory


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_batch_store_each_event_once():
    source = SourceFactory(pos=True)
    body = orjson.dumps({"batch": [TrackMessageFactory() for _ in range(200)]})
    start = threading.Barrier(4)
    accepted: list[int] = []

    def terminal():
        start.wait()
        response = Client().post(
            "/v1/batch",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=basic_auth(source.write_key),
        )
        assert response.status_code == 200
        accepted.append(response.json()["accepted"])
        connection.close()

    threads = [threading.Thread(target=terminal) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(accepted) == 4  # every terminal got a 200
    assert sum(accepted) == 200  # and between them, each event was accepted exactly once
    assert Event.objects.count() == 200
