from django.conf import settings
from django.db import models
from django.db.models import Q

from cdp.vault import text_open
from events.models import Event


class Member(models.Model):
    """One real person: the golden record that identity resolution attaches events to.

    A member absorbed by a merge keeps its row (status ``merged``) pointing at its survivor,
    so an id anyone stored still resolves. ``merged_into`` always names an active member, or
    an erased one: an erased member (status ``erased``, ``identity.erasure``) holds no
    identifier and no personal data, only its events' pseudonymous place for the figures kept
    under it (orders, points); no event is ever resolved to it again, and nothing rebuilds it.
    ``first_event_*`` is its earliest event: the canonical name of a member in the
    resolution's definition (the survivor of a merge is the member whose earliest event is
    earliest), and ``last_event_*`` tells whether a new event arrives in order.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        MERGED = "merged"
        ERASED = "erased"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    first_event_at = models.DateTimeField()
    first_event_message_id = models.CharField(max_length=255)
    first_event_source_id = models.BigIntegerField()
    last_event_at = models.DateTimeField()
    last_event_message_id = models.CharField(max_length=255)
    last_event_source_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Made by the members app before the model moved here: the table keeps its name, so
        # the rows, and the foreign keys of members' tables, stay where they were.
        db_table = "members_member"
        # Staff are granted access to members through members' proxy (``members.view_member``
        # and the like, the permission rows the model had before it moved): no second set here.
        default_permissions = ()
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["active", "erased"], merged_into__isnull=True)
                | Q(status="merged", merged_into__isnull=False),
                name="member_merged_iff_survivor",
            ),
        ]

    def __str__(self) -> str:
        return f"member {self.pk}" + (f" (merged into {self.merged_into_id})" if self.merged_into_id else "")


class MemberChange(models.Model):
    """Identity's outbox to members: a member whose events changed (new events, a merge, a
    replay, a split), so that what is computed from them is due for a refresh.

    Written per batch by the resolver, in the transaction that resolves the events; taken
    out (``member_changes_take``) by members, which turns them into its own refresh queue
    (``members.marks``). A member changed by several batches has several rows: the consumer
    coalesces them.
    """

    # A queue row, written per batch by the resolver: no database foreign key to check, and
    # no index but the primary key (it is taken oldest first, whole).
    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    changed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"member {self.member_id} (changed at {self.changed_at})"


class Identifier(models.Model):
    """A normalized identifier and the member that owns it (None: seen, never attached).

    Types that never merge are stored per member in ``MemberIdentifier`` instead of owning.
    ``last_seen_*`` is the latest event (in event time) that mentioned it.

    A phone or an email (``cdp.vault.SEALED_IDENTIFIER_TYPES``) is stored as its blind index
    (``value``: a keyed HMAC of the normalized value, what resolution matches and lookups find),
    and the value itself sealed beside it (``sealed``): a copy of the table shows neither.
    """

    type = models.CharField(max_length=64)
    value = models.CharField(max_length=320)
    sealed = models.TextField(
        blank=True,
        db_default="",  # the resolver and the benchmarks insert set-based, naming their columns
        help_text="A phone's or an email's value, sealed (cdp.vault); value is then its blind index.",
    )
    # No database foreign key (as EventIdentifier): only the resolver writes owners, under the
    # identity lock, and members are never deleted. Its deferred check was a query per row
    # written (500 a batch) and a FOR KEY SHARE lock that dirtied the member's page.
    member = models.ForeignKey(
        Member,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )  # indexed as identifier_by_member
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_message_id = models.CharField(max_length=255, blank=True)
    last_seen_source_id = models.BigIntegerField(null=True, blank=True)
    alias_class = models.CharField(
        max_length=320,
        blank=True,
        help_text="The smallest value of the same type an alias made one with it in its member "
        "(these count once toward the type's limit); blank: none.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["type", "value"], name="identifier_unique")]
        indexes = [models.Index(fields=["member"], name="identifier_by_member")]

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


class MemberIdentifier(models.Model):
    """An identifier of a type that never merges (a shared terminal id), held by a member."""

    # The unique (member, identifier) constraint's index serves lookups by member.
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+", db_index=False)
    identifier = models.ForeignKey(Identifier, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["member", "identifier"], name="member_identifier_unique")
        ]

    def __str__(self) -> str:
        return f"member {self.member_id} holds identifier {self.identifier_id}"


class EventIdentifier(models.Model):
    """An identifier an event mentioned, and whether resolution dropped it for matching.

    The mention index: a late event re-resolves every event linked to it through these.

    This table and ``EventResolution`` take a few rows per event, written only by the resolver
    under the identity lock and rebuildable from the event log; they carry no database
    foreign keys, whose deferred checks cost the pipeline more than a tenth of its time. Django
    still cascades deletes through them.

    Keyed by (event, identifier), the pair it is looked up by (an event's mentions), which
    a mention has once: a surrogate id would be one more index written per mention that no
    query reads, and a sequence to draw from (migration 0012).
    """

    pk = models.CompositePrimaryKey("event", "identifier")
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    identifier = models.ForeignKey(
        Identifier, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    dropped = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"event {self.event_id} mentions identifier {self.identifier_id}" + (
            " (dropped)" if self.dropped else ""
        )


class EventResolution(models.Model):
    """Which member an event belongs to, and the values it carried that could not be used."""

    # No database foreign keys: see EventIdentifier.
    event = models.OneToOneField(
        Event, primary_key=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    problems = models.JSONField(default=list, help_text="Invalid or blocked identifier values.")
    resolved_at = models.DateTimeField(auto_now=True)

    class Meta:
        # By member, then event: a member's events after an event id are one range of it
        # (``members.incremental`` reads only those).
        indexes = [models.Index(fields=["member", "event"], name="resolution_by_member_event")]

    def __str__(self) -> str:
        return f"event {self.event_id} → member {self.member_id}"


class MemberEventTally(models.Model):
    """How many events are resolved to each member and the sum of their ids: what
    ``EventResolution`` holds for the member, kept by triggers on it (migration 0011) in the
    transaction that writes it, whoever writes it (the resolver, a replay, a merge, a split, an
    erasure, SQL by hand).

    The member refresh's incremental path checks with it that a member's events are exactly
    the ones its stored state covers plus the new ones (``members.incremental``): counted from
    ``EventResolution``, that check read every event the member ever had, on every refresh, and
    so cost more the longer the history (a member with ~600 events: ~120 buffers and 0.6 ms of
    the backend's CPU per refresh, against ~25 for one with ~10; ``bench/heavy.py``).
    """

    member_id = models.BigIntegerField(primary_key=True)
    events = models.BigIntegerField()
    events_sum = models.BigIntegerField()

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.events} events"


class MergeRecord(models.Model):
    """Why two members became one."""

    class Cause(models.TextChoices):
        EVENT = "event", "An event linked them"
        REPLAY = "replay", "Re-resolution after a late event"

    # Indexed by merge_by_survivor and merge_by_absorbed.
    survivor = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="+", db_index=False)
    absorbed = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="+", db_index=False)
    event = models.ForeignKey(Event, null=True, on_delete=models.SET_NULL, related_name="+")
    identifiers = models.JSONField(default=list, help_text="The identifiers of the event that linked them.")
    rule = models.JSONField(default=dict, help_text="The rules (priorities, limits) that allowed it.")
    cause = models.CharField(max_length=16, choices=Cause.choices, default=Cause.EVENT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["survivor"], name="merge_by_survivor"),
            models.Index(fields=["absorbed"], name="merge_by_absorbed"),
        ]

    def __str__(self) -> str:
        return f"member {self.absorbed_id} merged into {self.survivor_id} ({self.cause})"


class SplitRecord(models.Model):
    """A staff split: ``identifiers`` belong to another person than ``others`` (the rest of
    the member then). Kept for good as a separation every later resolution respects, so a
    replay or rebuild never re-makes the wrong merge."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="+")
    identifiers = models.JSONField(help_text='The identifiers split off, as "type:value".')
    others = models.JSONField(help_text="The member's other identifiers at the time, as type:value.")
    resulting_members = models.JSONField(default=list, help_text="Member ids holding each side afterwards.")
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(
        help_text="Why, as staff wrote it, sealed (cdp.vault: it may name the person): read it with reason_text."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    #: The context a reason is sealed in (``cdp.vault.text_seal``).
    REASON = "identity_splitrecord.reason"

    def __str__(self) -> str:
        return f"split of member {self.member_id}: {', '.join(self.identifiers)}"

    @property
    def reason_text(self) -> str:
        return text_open(self.REASON, self.reason)


class ErasedIdentifier(models.Model):
    """A keyed one-way fingerprint of an identifier an erasure removed (``cdp.fingerprints``):
    nothing readable of it. Resolution drops, on arrival and in every rebuild, any identifier
    whose fingerprint is here: an event carrying it is stripped of its personal data instead
    of bringing the person back (``identity.erasure``).

    A phone or an email is fingerprinted as ``phone`` / ``email`` whatever type it was held as,
    so it is recognised whichever field a later event puts it in. ``released_from``: a policy
    allowing a new sign-up after an erasure let the person sign up again with it at that
    event time; events from then on use it again (``PRIVACY_ALLOW_SIGNUP_AFTER_ERASURE``).
    """

    kind = models.CharField(max_length=64, help_text="The identifier type, or phone / email.")
    fingerprint = models.CharField(max_length=64, unique=True)
    erasure_id = models.BigIntegerField(help_text="The erasure request (members.privacy) that made it.")
    erased_at = models.DateTimeField(auto_now_add=True)
    released_from = models.DateTimeField(
        null=True, blank=True, help_text="Usable again by events from this event time (a new sign-up)."
    )

    def __str__(self) -> str:
        return f"erased {self.kind} {self.fingerprint[:12]}…"
