"""Segment webhooks: a segment's entries and exits pushed to a marketing tool, signed, in
order, retried with backoff, logged.

A webhook is a cursor into the segment's changes feed (``SegmentChange``, whose id only
grows). A delivery claims the webhook (a lease on its row, so two workers never send the same
batch), reads the next changes after the cursor (one query), POSTs them as JSON signed with
the webhook's secret and, on a 2xx, moves the cursor past them. Nothing newer is sent before a
failed batch goes through: a failure leaves the cursor where it was and sets the next attempt
after an exponential backoff with jitter; ``WEBHOOK_MAX_FAILURES`` failures in a row (or a
``410 Gone``) disable the webhook until staff turn it on again. Every attempt is one
``WebhookDelivery`` row. No database transaction is open while the receiver is called.

Delivery is at least once: a worker that stalls past its lease can see its batch sent again by
another. Each change carries its cursor, so a receiver that remembers the highest it applied
drops a repeat.

A change committed after one with a higher id must not be overtaken: the cursor would move
past it for good. So a delivery only sends changes up to the highest id committed when it
claimed, after every transaction that was writing the feed then has ended (they hold a lock
on its table from before they take an id until they commit).

The member refresh nudges the webhooks of the segments whose membership it changed
(``webhooks_nudge``, on commit); beat sweeps every ``WEBHOOK_SWEEP_INTERVAL_SECONDS`` for
retries that fell due and nudges that were lost.

The package, by job: ``signing`` (the signature receivers check), ``transport`` (which
addresses a webhook may reach, and one POST pinned to a vetted address), ``delivery`` (the
engine: claim, send a batch, move the cursor or back off; the sweep's queries) and
``services`` (subscriptions staff make, and the nudge after a membership change). Tasks are
in ``tasks``: ``services`` enqueues them, and they run ``delivery``.
"""
