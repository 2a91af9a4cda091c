from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q

import identity.models
from cdp.models import ParkedWork
from members.aggregates import FIGURE_DIGITS


class Member(identity.models.Member):
    """A member as the members app sees it: the person its profile, figures, loyalty, tags
    and segments belong to.

    The row itself (status, ``merged_into``, first and last event) is identity's
    (``identity.models.Member``): identity creates, merges, retires and re-creates it, and
    members only reads it. This proxy keeps the staff permissions on members, where roles
    grant them (``members.view_member``, ``members.view_contact_details``,
    ``members.split_member``: the content type and permission rows the model had before it
    moved), and is what members' own tables point at (the same table, ``members_member``).
    """

    class Meta:
        proxy = True
        permissions = [
            ("view_contact_details", "Can see phone numbers and emails unmasked"),
            ("split_member", "Can split a wrong merge"),
        ]


class DirtyMark(models.Model):
    """A note that a member's events changed (new events, a merge, a replay, a split): what is
    computed from them is due for a refresh.

    Append-only, so that resolution never waits on a refresh in progress: resolution inserts
    marks, a refresh claims a batch ``FOR UPDATE SKIP LOCKED``, recomputes each member once
    however many marks it has (bursts coalesce) and deletes exactly the marks it claimed. A
    mark made while its member is being refreshed stays for the next refresh.
    """

    # A queue row, written per batch by the resolver: no database foreign key to check.
    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    marked_at = models.DateTimeField(auto_now_add=True)
    # Made from identity's outbox (new events, a merge, a replay, a split), not by another
    # change (consent recorded by staff, a manual tag, points, a rule's window closing): a
    # member whose marks all came from events, and whose stored state already covers all its
    # events, has nothing to refresh (``members.incremental.refresh_plan``'s ``settled``).
    from_events = models.BooleanField(db_default=False)

    class Meta:
        # A refresh also takes the later marks of the members it claims. Without an index that
        # was a pass over the whole queue per refresh, and the queue holds every mark deleted
        # since the last vacuum too: the pass grew with the stream.
        indexes = [models.Index(fields=["member"], name="dirtymark_by_member")]

    def __str__(self) -> str:
        return f"member {self.member_id} (dirty since {self.marked_at})"


class ParkedMember(ParkedWork):
    """A member whose refresh failed: its marks were taken out of the queue so that the
    members beside it go on, and the refresh claims no mark of it while it is parked (marks
    made meanwhile wait in the queue); replayed by marking it dirty again
    (``cdp.models.ParkedWork``)."""

    member = models.OneToOneField(Member, on_delete=models.CASCADE, related_name="+")

    class Meta(ParkedWork.Meta):
        permissions = [("replay_parkedmember", "Can replay parked members after a fix")]
        indexes = [
            # What /health/ counts and the staff API lists: the parked ones, newest first.
            models.Index(fields=["-id"], condition=Q(replayed_at__isnull=True), name="parkedmember_parked"),
        ]

    def __str__(self) -> str:
        return f"member {self.member_id} (parked)"


class MemberTrait(models.Model):
    """A profile trait: the value from the member's latest event stating it.

    A trait of ``PRIVACY_SEALED_TRAITS`` (phone, email, names) is stored sealed: ``value`` holds
    a sealed text (``cdp.vault``) in place of the value; a name trait is found by the blind
    indexes of its terms (``lookup``)."""

    # The unique (member, key) constraint's index serves lookups by member.
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="traits", db_index=False)
    key = models.CharField(max_length=255)
    value = models.JSONField(null=True)
    lookup = ArrayField(
        models.CharField(max_length=64),
        default=list,
        blank=True,
        db_default=[],  # written set-based, naming its columns
        help_text="A name trait: the blind indexes of its terms, what a search by name finds it by.",
    )
    observed_at = models.DateTimeField(help_text="Event time of the event that stated it.")
    channel = models.CharField(max_length=16)
    source_id = models.BigIntegerField()
    event_id = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "key"], name="member_trait_unique")]
        indexes = [
            # Only name traits carry terms: the other traits' empty lists stay out of the index.
            GinIndex(fields=["lookup"], condition=~Q(lookup=[]), name="member_trait_by_term"),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.value!r} (member {self.member_id})"


class Group(models.Model):
    """A group named by Segment ``group`` calls (an account, a company, a store club) and its
    traits: for each trait, the value from the latest group call (by event time) stating it,
    whoever made the call. Derived from events by the member refresh (``members.groups``)."""

    group_id = models.CharField(max_length=255, unique=True)
    traits = models.JSONField(default=dict)
    calls = models.PositiveIntegerField(
        default=0,
        help_text="How many group calls the traits were computed from: events are append-only, so a "
        "refresh that read fewer (it started before one committed) never overwrites one that read more.",
    )
    last_call_at = models.DateTimeField(null=True, help_text="Event time of its latest group call.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        name = self.traits.get("name") if isinstance(self.traits, dict) else None
        return f"group {self.group_id}" + (f" ({name})" if name else "")


class GroupMembership(models.Model):
    """A member belongs to a group: one of their events is a group call naming it. Derived:
    the member refresh rewrites a member's memberships from their events, so they follow
    merges and splits."""

    # The unique (member, group) constraint's index serves lookups by member.
    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="group_memberships", db_index=False
    )
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    first_call_at = models.DateTimeField(help_text="Event time of the member's first group call naming it.")
    last_call_at = models.DateTimeField(help_text="Event time of the member's latest group call naming it.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "group"], name="group_membership_unique")]

    def __str__(self) -> str:
        return f"member {self.member_id} in group {self.group_id}"


class MemberOrder(models.Model):
    """An order of a member, from its ``Order Completed`` event and any ``Order Refunded`` of it.
    An order is identified by its source and its ``order_id`` there (``members.aggregates``);
    a member holds the orders they own (``OrderOwner``). Derived: the member refresh rewrites a
    member's orders from their events."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="orders", db_index=False)
    source_id = models.BigIntegerField(help_text="The source that numbered the order.")
    order_id = models.CharField(max_length=255)
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)
    refunded = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)
    placed_at = models.DateTimeField(null=True, help_text="None: only a refund of it was seen.")
    channel = models.CharField(max_length=16)
    store_code = models.CharField(max_length=64, blank=True)
    event_id = models.BigIntegerField(help_text="The event that placed it (or its first refund).")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["member", "source_id", "order_id"], name="member_order_unique")
        ]
        indexes = [models.Index(fields=["order_id"], name="order_by_order_id")]

    def __str__(self) -> str:
        return f"order {self.order_id} ({self.total} {self.currency}, member {self.member_id})"


#: What an order row holds besides its member: the fields of ``members.aggregates.Order``.
ORDER_FIELDS = (
    "order_id", "currency", "total", "refunded", "placed_at", "channel", "store_code", "event_id", "source_id",
)  # fmt: skip


class OrderOwner(models.Model):
    """Who owns an order: the claim (a member's latest completion of it) that wins among those
    the member refresh has weighed, the latest by event time then messageId
    (``members.aggregates.order_owners``). One row per order, so one owner per order; the row
    is also what two refreshes claiming one order at once serialize on (``members.orders``).

    Derived: every claim is weighed when its member is refreshed, so a rebuild leaves the
    latest completion of each order as its owner, whatever order the events came in."""

    source_id = models.BigIntegerField()
    order_id = models.CharField(max_length=255)
    member_id = models.BigIntegerField(help_text="The member whose claim owns it (as last weighed).")
    event_id = models.BigIntegerField(help_text="The completion that makes the claim.")
    at = models.DateTimeField(help_text="The completion's event time.")
    message_id = models.CharField(max_length=255)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source_id", "order_id"], name="order_owner_unique")]

    def __str__(self) -> str:
        return f"order {self.order_id} of source {self.source_id}: member {self.member_id}"


class MemberAggregate(models.Model):
    """A member's figures, computed from their events: orders and spend (net of refunds, in
    ``currency``), per channel, first and last purchase, activity per channel and the stores
    visited. One row per active member with events; rewritten by the member refresh."""

    member = models.OneToOneField(
        Member, primary_key=True, on_delete=models.CASCADE, related_name="aggregate"
    )
    currency = models.CharField(max_length=3)
    orders = models.PositiveIntegerField(default=0)
    spend = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, default=0)
    refunded = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, default=0)
    average_order_value = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, null=True)
    first_purchase_at = models.DateTimeField(null=True)
    last_purchase_at = models.DateTimeField(null=True)
    orders_pos = models.PositiveIntegerField(default=0)
    orders_app = models.PositiveIntegerField(default=0)
    orders_mini_program = models.PositiveIntegerField(default=0)
    orders_web = models.PositiveIntegerField(default=0)
    spend_pos = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, default=0)
    spend_app = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, default=0)
    spend_mini_program = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, default=0)
    spend_web = models.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, default=0)
    orders_in_other_currencies = models.PositiveIntegerField(default=0)
    events = models.PositiveIntegerField(default=0)
    events_pos = models.PositiveIntegerField(default=0)
    events_app = models.PositiveIntegerField(default=0)
    events_mini_program = models.PositiveIntegerField(default=0)
    events_web = models.PositiveIntegerField(default=0)
    stores_visited = ArrayField(models.CharField(max_length=64), default=list)
    last_event_at = models.DateTimeField(null=True)
    # {event filter key: how many of the member's events pass it}, for the filters rules count
    # over all time (``Definitions.ever_filters``): the incremental refresh adds the new events
    # to them instead of reading the member's whole history. A missing key is unknown (a rule
    # added since): the member's next refresh recomputes from the log.
    # Also the database's default: rows written by set-based SQL (an import, a benchmark's
    # data) hold no count, which means unknown (the member's next refresh goes the full way).
    event_counts = models.JSONField(default=dict, db_default={})
    # {window key: the times of the member's events passing the filter, oldest first}, for
    # the filters windowed rules count (``Definitions.window_filters``), as far back as the
    # rules read each (and a day more: ``rules.interpret.event_times_add``): the incremental
    # refresh adds the new events' times instead of reading the member's earlier events. A
    # missing key is unknown (a rule added or a window lengthened since): full way, as above.
    event_times = models.JSONField(default=dict, db_default={})
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.orders} orders, {self.spend} {self.currency}"


class RefreshWatermark(models.Model):
    """How far a member's computed state (traits, orders, figures, ledger, tags and segments)
    covers their events: the highest event id and the latest event time the last refresh read.
    The refresh reads only the events after it when the member only gained later events since
    (``members.incremental``); a full recompute rewrites it, and whatever makes the stored
    state wrong in another way (an order taken by another member's claim) deletes it, so that
    the member's next refresh starts again from the log."""

    member = models.OneToOneField(
        Member, primary_key=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    event_id = models.BigIntegerField(help_text="The highest event id covered (0: none).")
    covered_at = models.DateTimeField(null=True, help_text="The latest event time covered.")
    # With the count of events the figures hold, it tells the events covered are exactly the
    # member's: a replay can move one event in and another out, leaving the count as it was.
    events_sum = models.BigIntegerField(
        null=True, help_text="The sum of the ids of the events covered (null: unknown, recompute)."
    )
    refreshed_at = models.DateTimeField(
        help_text="When the refresh that wrote it ran (its transaction's time)."
    )

    def __str__(self) -> str:
        return f"member {self.member_id}: events up to {self.event_id}"


__all__ = [
    "ORDER_FIELDS",
    "DirtyMark",
    "Group",
    "GroupMembership",
    "Member",
    "MemberAggregate",
    "MemberOrder",
    "MemberTrait",
    "OrderOwner",
    "ParkedMember",
    "RefreshWatermark",
]
