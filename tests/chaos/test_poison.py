"""Faults with figures (``make chaos``, and ``make test``): poison events, which a pipeline
stage fails on whatever the attempt (bad data), stream in among good orders to the Procfile's
worker. Each is parked (the batch is bisected down to it), and the rest flows: every good event
processed once, in the same run. The in-process case, with staff's view and the replay, is
``tests/events/test_parking.py``."""

import time

import pytest
from django.db import connection

from events.models import Event, ParkedEvent
from tests.chaos.figures import drained, pipeline_figures
from tests.chaos.stages import POISON_PREFIX
from tests.events.test_worker_integration import Stream, broker, seen_table
from tests.factories import SourceFactory
from tests.processes import CeleryWorker, wait_for

__all__ = ["broker", "seen_table"]  # fixtures, used by name

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STREAM_SECONDS = 5.0
POISON_EVERY = 23  # one order in so many


class WithPoison(Stream):
    """Orders, one in ``POISON_EVERY`` poisoned (its message id says so)."""

    def orders(self) -> list[dict]:
        messages = super().orders()
        for n, message in enumerate(messages):
            if (self.batches * 5 + n) % POISON_EVERY == 0:
                message["messageId"] = POISON_PREFIX + message["messageId"]
        return messages


def test_poison_events_are_parked_and_the_rest_flows(live_server, broker, tmp_path, seen_table):
    celery = CeleryWorker(
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=tmp_path,
        extra_env={
            "EVENT_PIPELINE_STAGES": (
                "tests.chaos.stages.refuse_poison,identity.services.identity_resolve_events,"
                "tests.events.stages.record_in_table"
            ),
            "EVENT_PIPELINE_BATCH_SIZE": "25",
        },
    )
    stream = WithPoison(live_server.url, SourceFactory().write_key)
    celery.start()
    try:
        assert wait_for(lambda: "ready." in celery.output(), timeout=30), celery.output()
        stream.start()
        time.sleep(STREAM_SECONDS)
        stream.stop()
        assert wait_for(lambda: drained(connection), timeout=90, interval=0.5), celery.output()
    finally:
        stream.stop()
        celery.stop()

    with connection.cursor() as cursor:
        figures = pipeline_figures(
            cursor, fault="poison", sent=stream.batches * 5, accepted=stream.accepted, seen_table=seen_table
        )
    poisoned = {message_id for message_id in stream.accepted if message_id.startswith(POISON_PREFIX)}
    parked = set(
        Event.objects.filter(pk__in=ParkedEvent.objects.values("event_id")).values_list(
            "message_id", flat=True
        )
    )
    figures.report(f"one in {POISON_EVERY} poisoned ({len(poisoned)})")
    assert not stream.failures, stream.failures[:3]
    assert poisoned
    assert parked == poisoned  # each poisoned event parked, and nothing else
    assert figures.stored == figures.accepted == figures.sent
    assert figures.processed == figures.stored - len(poisoned)  # the rest flowed
    assert (figures.lost, figures.doubled) == (0, 0)
