"""Faults with figures (``make chaos``, and ``make test``: it is quick): a segment webhook's
receiver is down (nothing listens on its port: connections are refused) for an hour while its
segment keeps changing, then back. Time is simulated: the clock the delivery engine is given
moves a minute at a time (the segment changes every five), and a delivery is tried whenever
the sweep would find the webhook due (its backoff over), as beat does every
WEBHOOK_SWEEP_INTERVAL_SECONDS. Nothing may be lost, nothing sent twice, the order kept across
deliveries, and an hour's outage must not turn the webhook off."""

import random
from datetime import timedelta

import pytest

from members.segments.models import Segment, SegmentWebhook, WebhookDelivery
from members.segments.services import segment_static_set
from members.segments.webhooks.delivery import Outcome, webhook_deliver, webhooks_due
from members.segments.webhooks.services import webhook_create
from tests.chaos.figures import Figures
from tests.members.segments.test_webhooks import T0, Receiver, feed, members
from tests.processes import free_port

pytestmark = pytest.mark.django_db

DOWN = timedelta(hours=1)
TICK = timedelta(minutes=1)  # beat's sweep, as often as the simulated clock looks
CHANGE_EVERY = timedelta(minutes=5)


def test_a_receiver_down_for_an_hour_then_back_gets_every_change_once_in_order(settings):
    settings.WEBHOOK_BATCH_SIZE = 50  # the backlog goes in several deliveries
    segment = Segment.objects.create(key="vip", name="VIP list", kind="static")
    people = members(40)
    port = free_port()  # nobody listens there until the receiver comes back
    webhook = webhook_create(segment=segment, url=f"http://127.0.0.1:{port}/hooks/cdp")
    shuffle = random.Random(19)

    def sweep(now):
        """What beat's sweep and the delivery task do at ``now``: deliver if due."""
        if webhook.pk in webhooks_due(now=now):
            return webhook_deliver(webhook_id=webhook.pk, now=now).outcome
        return None

    now = T0
    failed = 0
    while now < T0 + DOWN:  # the segment changes every few minutes; every try fails
        if (now - T0) % CHANGE_EVERY == timedelta(0):
            segment_static_set(segment=segment, member_ids=shuffle.sample(people, 20), now=now)
        if sweep(now) is Outcome.FAILED:
            failed += 1
        now += TICK
    webhook.refresh_from_db()
    assert webhook.active, webhook.disabled_reason
    assert webhook.failures == failed > 0

    receiver = Receiver(port=port)
    try:
        back = now
        while sweep(now) is not Outcome.IDLE:  # the next try comes when its backoff ends
            now += TICK
        caught_up = now
    finally:
        receiver.close()

    changes = [pk for pk, _, _ in feed(segment)]
    delivered = [cursor for request in receiver.received for cursor in request.cursors]
    figures = Figures(
        fault="webhook-receiver-down",
        sent=len(changes),
        accepted=len(changes),
        stored=len(changes),
        processed=len(set(delivered)),
        lost=len(set(changes) - set(delivered)),
        doubled=len(delivered) - len(set(delivered)),
    )
    webhook.refresh_from_db()
    figures.report(
        f"down {DOWN}, failed tries {failed} (disabled at {settings.WEBHOOK_MAX_FAILURES}), caught up "
        f"{caught_up - back} after it came back (simulated), deliveries {len(receiver.received)}"
    )
    assert delivered == changes  # each once, in order
    assert (figures.lost, figures.doubled) == (0, 0)
    assert (webhook.active, webhook.failures, webhook.next_attempt_at) == (True, 0, None)
    assert webhook.cursor >= changes[-1]
    # The log tells the story: the failed tries (refused), then what went through.
    log = list(WebhookDelivery.objects.order_by("pk").values_list("attempt", "succeeded"))
    assert log[:failed] == [(attempt, False) for attempt in range(1, failed + 1)]
    assert all(succeeded for _, succeeded in log[failed:])
    assert SegmentWebhook.objects.get(pk=webhook.pk).last_success_at == caught_up
