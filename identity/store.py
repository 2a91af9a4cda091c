"""The resolution engine over PostgreSQL: load the part of the graph a batch touches, decide in
memory with ``identity.resolution`` (the same code the property tests check), write the
difference back in bulk.

A batch costs a handful of queries whatever its size: the graph around all its identifiers
is loaded up front, and a late event's component is walked one level per query. The caller
holds the identity lock for the whole transaction, so what was loaded stays true until the
writes commit.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict

from django.db.models import BigIntegerField, Case, Value, When
from django.utils import timezone

from events.models import Event
from identity.identifiers import Identifier
from identity.models import EventIdentifier, EventResolution, MemberIdentifier, MergeRecord, SplitRecord
from identity.models import Identifier as IdentifierRow
from identity.resolution import (
    Decision,
    EventKey,
    InMemoryResolver,
    MemberRef,
    MemberState,
    ResolvableEvent,
    Separation,
)
from identity.rules import Rules
from members.models import DirtyMember, Member


def parse_identifier(text: str) -> Identifier:
    type_, _, value = text.partition(":")
    return Identifier(type_, value)


def separations_stored() -> list[Separation]:
    """Every split staff have made, as constraints for resolution (few: one query)."""
    return [
        Separation(frozenset(map(parse_identifier, one)), frozenset(map(parse_identifier, other)))
        for one, other in SplitRecord.objects.order_by("id").values_list("identifiers", "others")
    ]


def event_key(event: Event) -> EventKey:
    return EventKey(event.timestamp, event.message_id, event.source_id)


def _key(at: object, message_id: str, source_id: int | None) -> EventKey | None:
    return None if at is None else EventKey(at, message_id, source_id)


class DatabaseResolver(InMemoryResolver):
    def __init__(
        self,
        rules: Rules,
        reuse_ids: dict[EventKey, int] | None = None,
        separations: Iterable[Separation] | None = None,
    ) -> None:
        super().__init__(rules, separations if separations is not None else separations_stored())
        #: Member ids to give again to members founded by the same event (a rebuild's old ids).
        self.reuse_ids = reuse_ids or {}
        self.identifier_ids: dict[Identifier, int] = {}
        self.loaded_identifiers: set[Identifier] = set()
        self.loaded_members: dict[int, Member] = {}
        self.mentions_loaded: set[Identifier] = set()
        self.event_ids: dict[EventKey, int] = {}
        self.stored_member_of: dict[EventKey, int] = {}
        self.problems: dict[EventKey, list[dict]] = {}
        self.decisions: list[tuple[Decision, str]] = []
        self.replaying = False
        #: Stored members a late event's replay dissolved, and that event.
        self.replayed_by: dict[int, EventKey | None] = {}
        self.arriving: EventKey | None = None  # None: a replay not caused by an event (a split)

    # --- loading -------------------------------------------------------------------------

    def load_graph(self, identifiers: Iterable[Identifier]) -> None:
        wanted = {i for i in identifiers if i not in self.loaded_identifiers}
        if not wanted:
            return
        self.loaded_identifiers |= wanted
        rows = IdentifierRow.objects.filter(
            type__in={i.type for i in wanted}, value__in={i.value for i in wanted}
        ).values_list(
            "id", "type", "value", "member_id", "last_seen_at", "last_seen_message_id", "last_seen_source_id"
        )
        owners = set()
        for row_id, type_, value, member_id, *seen in rows:
            identifier = Identifier(type_, value)
            if identifier not in wanted:
                continue
            self._remember_identifier(row_id, identifier, member_id, seen)
            if member_id is not None:
                owners.add(member_id)
        self._load_members(owners)

    def _remember_identifier(
        self, row_id: int, identifier: Identifier, member_id: int | None, seen: list
    ) -> None:
        self.identifier_ids[identifier] = row_id
        self.loaded_identifiers.add(identifier)
        last_seen = _key(*seen)
        if last_seen is not None and identifier not in self.graph.last_seen:
            self.graph.last_seen[identifier] = last_seen
        if member_id is not None and member_id in self.graph.members:
            self.graph.owner.setdefault(identifier, member_id)

    def _load_members(self, member_ids: set[int]) -> None:
        """Members with everything they hold, so limits and merges see all of it."""
        new = member_ids - self.loaded_members.keys()
        if not new:
            return
        active = set()
        for member in Member.objects.filter(id__in=new, status=Member.Status.ACTIVE):
            active.add(member.pk)
            self.loaded_members[member.pk] = member
            self.graph.members[member.pk] = MemberState(
                first_event=EventKey(
                    member.first_event_at, member.first_event_message_id, member.first_event_source_id
                ),
                last_event=EventKey(
                    member.last_event_at, member.last_event_message_id, member.last_event_source_id
                ),
            )
        # An identifier pointing at a retired member (never left so by resolution) counts as unowned.
        held = IdentifierRow.objects.filter(member_id__in=active).values_list(
            "id", "type", "value", "member_id", "last_seen_at", "last_seen_message_id", "last_seen_source_id"
        )
        unmerging = MemberIdentifier.objects.filter(member_id__in=active).values_list(
            "identifier_id", "identifier__type", "identifier__value", "member_id"
        )
        for row_id, type_, value, member_id, *seen in held:
            identifier = Identifier(type_, value)
            self.graph.members[member_id].identifiers.setdefault(type_, set()).add(value)
            self.graph.owner[identifier] = member_id
            self._remember_identifier(row_id, identifier, member_id, seen)
        for row_id, type_, value, member_id in unmerging:
            self.identifier_ids[Identifier(type_, value)] = row_id
            self.graph.members[member_id].identifiers.setdefault(type_, set()).add(value)

    def load_mentions(self, identifiers: Iterable[Identifier]) -> None:
        wanted = {i for i in identifiers if i not in self.mentions_loaded and i in self.identifier_ids}
        self.mentions_loaded |= set(identifiers)
        if not wanted:
            return
        ids = [self.identifier_ids[i] for i in wanted]
        event_ids = set(
            EventIdentifier.objects.filter(identifier_id__in=ids).values_list("event_id", flat=True)
        )
        known = set(self.event_ids.values())
        self.load_events(event_ids - known)

    def load_events(self, event_ids: set[int]) -> None:
        """Resolved events from the database, with what they mentioned and their member."""
        if not event_ids:
            return
        mentioned: dict[int, set[Identifier]] = defaultdict(set)
        for event_id, type_, value, identifier_id in EventIdentifier.objects.filter(
            event_id__in=event_ids
        ).values_list("event_id", "identifier__type", "identifier__value", "identifier_id"):
            identifier = Identifier(type_, value)
            mentioned[event_id].add(identifier)
            self.identifier_ids.setdefault(identifier, identifier_id)
        members = dict(
            EventResolution.objects.filter(event_id__in=event_ids).values_list("event_id", "member_id")
        )
        self._load_members(set(members.values()))
        self.load_graph({i for found in mentioned.values() for i in found})
        for event_id, at, message_id, source_id in Event.objects.filter(id__in=event_ids).values_list(
            "id", "timestamp", "message_id", "source_id"
        ):
            key = EventKey(at, message_id, source_id)
            self.event_ids[key] = event_id
            event = ResolvableEvent(key, frozenset(mentioned[event_id]))
            self.events[key] = event
            for identifier in event.identifiers:
                if self.graph.merges(identifier):
                    self.mentions[identifier].add(key)
            if event_id in members:
                self.stored_member_of[key] = members[event_id]
                self.member_of[key] = members[event_id]
                self.events_of[members[event_id]].add(key)

    # --- deciding (the algorithm is inherited; this only records what happened) --------

    def add(self, event: ResolvableEvent) -> None:
        self.arriving = event.key
        super().add(event)

    def _replay(self, keys: set[EventKey]) -> None:
        for key in keys:
            if isinstance(ref := self.member_of.get(key), int):
                self.replayed_by.setdefault(ref, self.arriving)
        self.replaying = True
        try:
            super()._replay(keys)
        finally:
            self.replaying = False

    def _apply(self, decision: Decision) -> None:
        super()._apply(decision)
        self.decisions.append(
            (decision, MergeRecord.Cause.REPLAY if self.replaying else MergeRecord.Cause.EVENT)
        )

    # --- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        member_ids = self._write_members()
        self._write_identifiers(member_ids)
        self._write_event_identifiers()
        self._write_resolutions(member_ids)
        self._write_merges(member_ids)
        self._mark_dirty(member_ids)

    def _mark_dirty(self, member_ids: dict[MemberRef, int]) -> None:
        """Members whose events changed, for the members stages to refresh."""
        changed = {member_ids[self.member_of[key]] for key in self.decisions_by_event()} | set(self.retired)
        changed |= set(self.retired.values())
        DirtyMember.objects.bulk_create(
            [DirtyMember(member_id=pk) for pk in sorted(changed)], ignore_conflicts=True
        )

    def decisions_by_event(self) -> dict[EventKey, Decision]:
        return {decision.event: decision for decision, _ in self.decisions}

    def _write_members(self) -> dict[MemberRef, int]:
        """Create new members, update touched ones, retire the ones that were absorbed.

        A member re-created by a replay keeps the id of the old member founded by the same
        event, so ids stay stable when a late event changes nothing for them.
        """
        by_first_event = {
            EventKey(m.first_event_at, m.first_event_message_id, m.first_event_source_id): pk
            for pk, m in self.loaded_members.items()
        }
        ids: dict[MemberRef, int] = {}
        to_create, to_update = [], []
        for ref, state in self.graph.members.items():
            pk = (
                ref
                if isinstance(ref, int)
                else by_first_event.get(state.first_event, self.reuse_ids.get(state.first_event))
            )
            fields = {
                "status": Member.Status.ACTIVE,
                "merged_into": None,
                "first_event_at": state.first_event.timestamp,
                "first_event_message_id": state.first_event.message_id,
                "first_event_source_id": state.first_event.source_id,
                "last_event_at": state.last_event.timestamp,
                "last_event_message_id": state.last_event.message_id,
                "last_event_source_id": state.last_event.source_id,
            }
            if pk is None:
                to_create.append((ref, Member(**fields)))
            else:
                ids[ref] = pk
                to_update.append(Member(pk=pk, updated_at=timezone.now(), **fields))
        created = Member.objects.bulk_create([member for _, member in to_create])
        ids.update({ref: member.pk for (ref, _), member in zip(to_create, created, strict=True)})
        kept = set(ids.values())
        retired = {pk: self._survivor_of(pk, ids) for pk in self.loaded_members if pk not in kept}
        for pk, survivor in retired.items():
            to_update.append(
                Member(pk=pk, updated_at=timezone.now(), status=Member.Status.MERGED, merged_into_id=survivor,
                       **{f: getattr(self.loaded_members[pk], f) for f in _EVENT_FIELDS})
            )  # fmt: skip
        # Active members must be active before anything points at them, and vice versa.
        Member.objects.bulk_update(
            sorted(to_update, key=lambda m: m.status != Member.Status.ACTIVE),
            ["status", "merged_into", "updated_at", *_EVENT_FIELDS],
        )
        if retired:
            Member.objects.filter(merged_into_id__in=retired).update(
                merged_into_id=_lookup("merged_into_id", retired)
            )
        self.retired = retired
        return ids

    def _survivor_of(self, old: int, ids: dict[MemberRef, int]) -> int:
        """Where an old member's id now leads: the member holding its earliest event."""
        member = self.loaded_members[old]
        first = EventKey(member.first_event_at, member.first_event_message_id, member.first_event_source_id)
        return (
            ids[self.member_of[first]] if first in self.member_of else ids[self._final(self._absorber(old))]
        )

    def _absorber(self, old: int) -> MemberRef:
        for decision, _ in reversed(self.decisions):
            if old in decision.absorbed:
                return decision.member
        raise LookupError(f"member {old} vanished without being absorbed")

    def _write_identifiers(self, member_ids: dict[MemberRef, int]) -> None:
        touched = self.loaded_identifiers | {i for e in self.events.values() for i in e.identifiers}
        rows = []
        for identifier in sorted(touched):
            owner = self.graph.owner.get(identifier) if self.graph.merges(identifier) else None
            seen = self.graph.last_seen.get(identifier)
            rows.append(
                IdentifierRow(
                    type=identifier.type,
                    value=identifier.value,
                    member_id=member_ids[owner] if owner is not None else None,
                    last_seen_at=seen.timestamp if seen else None,
                    last_seen_message_id=seen.message_id if seen else "",
                    last_seen_source_id=seen.source_id if seen else None,
                )
            )
        saved = IdentifierRow.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["type", "value"],
            update_fields=["member", "last_seen_at", "last_seen_message_id", "last_seen_source_id"],
        )
        for row in saved:
            self.identifier_ids[Identifier(row.type, row.value)] = row.pk
        unmerging = [
            MemberIdentifier(
                member_id=member_ids[ref], identifier_id=self.identifier_ids[Identifier(type_, value)]
            )
            for ref, state in self.graph.members.items()
            for type_, values in state.identifiers.items()
            if not self.rules.of(type_).merges
            for value in values
        ]
        MemberIdentifier.objects.filter(member_id__in=self.retired).delete()
        MemberIdentifier.objects.bulk_create(unmerging, ignore_conflicts=True)

    @property
    def rules(self) -> Rules:
        return self.graph.rules

    def _write_event_identifiers(self) -> None:
        decided = self.decisions_by_event()
        EventIdentifier.objects.filter(event_id__in=[self.event_ids[key] for key in decided]).delete()
        EventIdentifier.objects.bulk_create(
            EventIdentifier(
                event_id=self.event_ids[key],
                identifier_id=self.identifier_ids[identifier],
                dropped=identifier in decision.dropped,
            )
            for key, decision in decided.items()
            for identifier in self.events[key].identifiers
        )

    def _write_resolutions(self, member_ids: dict[MemberRef, int]) -> None:
        changed = [
            EventResolution(
                event_id=self.event_ids[key], member_id=member_ids[ref], problems=self.problems.get(key, [])
            )
            for key, ref in self.member_of.items()
            if key in self.problems or self.stored_member_of.get(key) != member_ids[ref]
        ]
        EventResolution.objects.bulk_create(
            changed,
            update_conflicts=True,
            unique_fields=["event"],
            update_fields=["member", "problems", "resolved_at"],
        )
        # Events of absorbed members that were never loaded follow their survivor.
        if self.retired:
            EventResolution.objects.filter(member_id__in=self.retired).update(
                member_id=_lookup("member_id", self.retired), resolved_at=timezone.now()
            )

    def _write_merges(self, member_ids: dict[MemberRef, int]) -> None:
        rule = {type_: asdict(r) for type_, r in sorted(self.rules.by_type.items())}
        records = []
        for decision, cause in self.decisions:
            for ref in decision.absorbed:
                absorbed = ref if isinstance(ref, int) else member_ids.get(ref)
                if absorbed is None:
                    continue  # a member born and absorbed within this batch was never visible
                records.append(
                    MergeRecord(
                        survivor_id=member_ids[self._final(decision.member)],
                        absorbed_id=absorbed,
                        event_id=self.event_ids[decision.event],
                        identifiers=sorted(
                            str(i)
                            for i in self.events[decision.event].identifiers
                            if i not in decision.dropped
                        ),
                        rule=rule,
                        cause=cause,
                    )
                )
        recorded = {record.absorbed_id for record in records}
        records += [
            MergeRecord(
                survivor_id=survivor,
                absorbed_id=old,
                event_id=self.event_ids[cause] if (cause := self.replayed_by[old]) else None,
                identifiers=sorted(str(i) for i in self.events[cause].identifiers) if cause else [],
                rule=rule,
                cause=MergeRecord.Cause.REPLAY,
            )
            for old, survivor in self.retired.items()
            if old not in recorded and old in self.replayed_by
        ]
        MergeRecord.objects.bulk_create(records)

    def _final(self, ref: MemberRef) -> MemberRef:
        """The member ``ref`` ended up in, after later merges in the same batch."""
        while ref not in self.graph.members:
            ref = self._absorber(ref)
        return ref


def _lookup(column: str, mapping: dict[int, int]) -> Case:
    """``CASE column WHEN old THEN new ...``: many re-pointings in one UPDATE."""
    return Case(
        *(When(**{column: old}, then=Value(new)) for old, new in mapping.items()),
        output_field=BigIntegerField(),
    )


_EVENT_FIELDS = (
    "first_event_at", "first_event_message_id", "first_event_source_id",
    "last_event_at", "last_event_message_id", "last_event_source_id",
)  # fmt: skip


def resolvable_events(
    events: Sequence[Event], identifiers_of: dict[int, frozenset[Identifier]]
) -> list[tuple[Event, ResolvableEvent]]:
    return sorted(
        ((event, ResolvableEvent(event_key(event), identifiers_of[event.id])) for event in events),
        key=lambda pair: pair[1].key,
    )
