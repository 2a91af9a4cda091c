"""The resolution engine over PostgreSQL: load the part of the graph a batch touches, decide in
memory with ``identity.resolution`` (the same code the property tests check), write the
difference back in bulk.

A batch costs a handful of queries whatever its size: the graph around all its identifiers
is loaded up front, and what a late event re-decides is walked a level at a time (a query
for the level's mentions, and one for the anchors of the mentions it may leave out). The caller
holds the identity lock for the whole transaction, so what was loaded stays true until the
writes commit.
"""

from collections import defaultdict
from collections.abc import Iterable, Set
from dataclasses import asdict
from datetime import datetime

import orjson

from cdp.db import binary_parameters_cursor
from cdp.vault import identifier_seal
from events.models import Event
from events.pipeline import ClaimedEvent
from identity.identifiers import Identifier, vouches_for_one_person
from identity.models import (
    EventIdentifier,
    EventResolution,
    Member,
    MemberChange,
    MemberIdentifier,
    MergeRecord,
    SplitRecord,
)
from identity.models import Identifier as IdentifierRow
from identity.resolution import (
    Decision,
    EventKey,
    InMemoryResolver,
    MemberRef,
    MemberState,
    MergeLinks,
    ResolvableEvent,
    Separation,
)
from identity.rules import Rules


def parse_identifier(text: str) -> Identifier:
    type_, _, value = text.partition(":")
    return Identifier(type_, value)


def separations_stored() -> list[Separation]:
    """Every split staff have made, as constraints for resolution (few: one query)."""
    return [
        Separation(frozenset(map(parse_identifier, one)), frozenset(map(parse_identifier, other)))
        for one, other in SplitRecord.objects.order_by("id").values_list("identifiers", "others")
    ]


def merge_rule(rules: Rules) -> dict:
    """The rules a merge record keeps: under which priorities and limits it was made."""
    return {str(type_): asdict(rule) for type_, rule in sorted(rules.by_type.items())}


def event_key(event: ClaimedEvent | Event) -> EventKey:
    return EventKey(event.timestamp, event.message_id, event.source_id)


def _key(at: datetime | None, message_id: str, source_id: int | None) -> EventKey | None:
    """An event moment stored as three nullable columns: all set, or none (no event yet)."""
    if at is None:
        return None
    assert source_id is not None, "a stored event moment names its source"
    return EventKey(at, message_id, source_id)


class DatabaseResolver(InMemoryResolver):
    def __init__(
        self,
        rules: Rules,
        reuse_ids: dict[EventKey, int] | None = None,
        separations: Iterable[Separation] | None = None,
    ) -> None:
        super().__init__(rules, separations if separations is not None else separations_stored())
        #: Member ids to give again to members founded by the same event (a rebuild's old ids,
        #: members a split or a replay may bring back).
        self.reuse_ids = reuse_ids or {}  # the caller's: replaced, never changed, when added to
        #: Where retired members among ``reuse_ids`` lead now, as stored (unknown: a rebuild).
        self.leads_to: dict[int, int] = {}
        self.identifier_ids: dict[Identifier, int] = {}
        #: The values of the batch's phones and emails, by their blind index (``cdp.vault``):
        #: sealed into the rows this run creates.
        self.values_to_seal: dict[Identifier, str] = {}
        self.loaded_identifiers: set[Identifier] = set()
        #: Stored members loaded: id -> (first event, last event), as the database has them.
        self.loaded_members: dict[int, tuple[EventKey, EventKey]] = {}
        #: Stored identifiers loaded: identifier -> (owner id, last seen, alias class), to write
        #: only changes.
        self.stored_identifiers: dict[Identifier, tuple[int | None, EventKey | None, str]] = {}
        self.mentions_loaded: set[Identifier] = set()
        self.event_ids: dict[EventKey, int] = {}
        self.stored_member_of: dict[EventKey, int] = {}
        #: Stored events' identifiers that were dropped for matching, by event id.
        self.stored_dropped: dict[int, set[Identifier]] = {}
        self.problems: dict[EventKey, list[dict]] = {}
        #: How each event was last decided: on time (EVENT) or re-decided by a replay (REPLAY).
        self.how: dict[EventKey, str] = {}
        self.replaying = False
        #: Old members this run re-decided and that do not stand, with the member holding their
        #: founding event: the ones ``retired`` now, and retired ones that still lead there.
        self.settled: dict[int, int] = {}
        #: The founding event of each old member the run knew (loaded, or re-decided by it).
        self.founding: dict[int, EventKey] = {}
        #: Events ``resolve_known`` resolved, to their member; those members as they will be
        #: stored (first and last event); and their identifiers' new rows (owner, last seen,
        #: alias class). The engine never sees any of it: ``flush`` writes it beside its own.
        self.known: dict[EventKey, int] = {}
        self.known_mentions: dict[EventKey, frozenset[Identifier]] = {}
        self.known_members: dict[int, MemberState] = {}
        self.known_identifiers: dict[Identifier, tuple[int, EventKey, str]] = {}

    # --- loading -------------------------------------------------------------------------

    def load_graph(self, identifiers: Iterable[Identifier], rows: list[tuple] | None = None) -> None:
        """``rows``: these identifiers' stored rows (``_IDENTIFIERS_BY_KEY``), when already read."""
        wanted = {i for i in identifiers if i not in self.loaded_identifiers}
        if not wanted:
            return
        self.loaded_identifiers |= wanted
        if rows is None:
            rows = _sql(_IDENTIFIERS_BY_KEY, [[i.type for i in wanted], [i.value for i in wanted]])
        owners = set()
        for row_id, type_, value, member_id, alias_class, *seen in rows:
            self._remember_identifier(row_id, Identifier(type_, value), member_id, alias_class, seen)
            if member_id is not None:
                owners.add(member_id)
        self._load_members(owners)

    def _remember_identifier(
        self, row_id: int, identifier: Identifier, member_id: int | None, alias_class: str, seen: list
    ) -> None:
        self.identifier_ids[identifier] = row_id
        self.loaded_identifiers.add(identifier)
        last_seen = _key(*seen)
        self.stored_identifiers[identifier] = (member_id, last_seen, alias_class)
        if last_seen is not None and identifier not in self.graph.last_seen:
            self.graph.last_seen[identifier] = last_seen
        if member_id is not None and member_id in self.graph.members:
            self.graph.owner.setdefault(identifier, member_id)

    def _load_members(self, member_ids: set[int]) -> None:
        """Members with everything they hold, so limits and merges see all of it."""
        new = member_ids - self.loaded_members.keys()
        if not new:
            return
        active = []
        for pk, *fields in _sql(_ACTIVE_MEMBERS, [list(new)]):
            first, last = EventKey(*fields[:3]), EventKey(*fields[3:])
            active.append(pk)
            self.loaded_members[pk] = (first, last)
            self.graph.members[pk] = MemberState(first_event=first, last_event=last)
        if not active:
            return
        # An identifier pointing at a retired member (never left so by resolution) counts as unowned.
        held = _sql(_IDENTIFIERS_HELD, [active])
        unmerging = _sql(_UNMERGING_HELD, [active])
        for row_id, type_, value, member_id, alias_class, *seen in held:
            identifier = Identifier(type_, value)
            state = self.graph.members[member_id]
            state.identifiers.setdefault(type_, set()).add(value)
            if alias_class:
                state.alias_class[identifier] = alias_class
            self.graph.owner[identifier] = member_id
            self._remember_identifier(row_id, identifier, member_id, alias_class, seen)
        for row_id, type_, value, member_id in unmerging:
            self.identifier_ids[Identifier(type_, value)] = row_id
            self.stored_identifiers[Identifier(type_, value)] = (None, None, "")
            self.graph.members[member_id].identifiers.setdefault(type_, set()).add(value)

    def load_mentions(self, identifiers: Iterable[Identifier]) -> None:
        wanted = {i for i in identifiers if i not in self.mentions_loaded and i in self.identifier_ids}
        self.mentions_loaded |= set(identifiers)
        if not wanted:
            return
        ids = [self.identifier_ids[i] for i in wanted]
        event_ids = {row[0] for row in _sql(_MENTIONING_EVENTS, [ids])}
        known = set(self.event_ids.values())
        self.load_events(event_ids - known)

    def anchors(self, identifiers: Iterable[Identifier]) -> dict[Identifier, dict[str, EventKey]]:
        """As the in-memory resolver's, over the stored events too: their mentions that were not
        dropped, read with the values of limit-one types accepted beside them (one query). An
        event this run decided again counts by its new decision only."""
        wanted = list(identifiers)
        found = super().anchors(wanted)
        limited = sorted(t for t, rule in self.rules.by_type.items() if rule.merges and rule.limit == 1)
        ids = {self.identifier_ids[i]: i for i in wanted if i in self.identifier_ids}
        if not ids or not limited:
            return found
        redecided = {self.event_ids[key] for key in self.decisions if key in self.event_ids}
        for identifier_id, event_id, type_, *at in _sql(_ANCHORS, [list(ids), limited]):
            if event_id in redecided:
                continue
            key, earliest = EventKey(*at), found[ids[identifier_id]]
            if type_ not in earliest or key < earliest[type_]:
                earliest[type_] = key
        return found

    def dropped_by(self, key: EventKey) -> Set[Identifier] | None:
        if key in self.decisions:
            return frozenset(self.decisions[key].dropped)
        if key in self.stored_member_of:
            return self.stored_dropped.get(self.event_ids[key], frozenset())
        return None

    def load_events(self, event_ids: set[int]) -> None:
        """Resolved events from the database, with what they mentioned and their member."""
        if not event_ids:
            return
        ids = sorted(event_ids)
        mentioned: dict[int, set[Identifier]] = defaultdict(set)
        for event_id, type_, value, identifier_id, dropped in _sql(_MENTIONS_OF_EVENTS, [ids]):
            identifier = Identifier(type_, value)
            mentioned[event_id].add(identifier)
            if dropped:
                self.stored_dropped.setdefault(event_id, set()).add(identifier)
            self.identifier_ids.setdefault(identifier, identifier_id)
        rows = _sql(_EVENTS_AND_MEMBERS, [ids])
        members = {event_id: member_id for event_id, *_, member_id in rows if member_id is not None}
        self._load_members(set(members.values()))
        self.load_graph({i for found in mentioned.values() for i in found})
        for event_id, at, message_id, source_id, message_type, _ in rows:
            key = EventKey(at, message_id, source_id)
            self.event_ids[key] = event_id
            event = ResolvableEvent(key, frozenset(mentioned[event_id]), vouches_for_one_person(message_type))
            self.events[key] = event
            for identifier in event.identifiers:
                if self.graph.merges(identifier):
                    self.mentions[identifier].add(key)
            if event_id in members:
                self.stored_member_of[key] = members[event_id]
                self.member_of[key] = members[event_id]
                self.events_of[members[event_id]].add(key)

    # --- events of one known member (the fast path) ---------------------------------------

    def resolve_known(self, events: Iterable[ResolvableEvent]) -> list[ResolvableEvent]:
        """Resolve, set-based, the events that only name identifiers one stored member already
        holds (a known customer's order, a page view by a known device), and load the graph
        around the other events, which are returned for ``add_batch``. Called once per batch,
        instead of ``load_graph`` over the batch's identifiers; ``known_overlaps`` then tells
        whether the engine reached one of these members after all.

        An event goes this way when it is not an alias, every identifier it carries merges, is
        on no side of a staff split, is stored, owned by the same active member ``m`` and last
        seen before the event, the event is later than ``m``'s latest, ``m`` is within every
        limit of today's rules, and no other event of the batch names an identifier of ``m``.
        The engine would find it on time, accept every identifier (``m`` holds them all and
        stays within its limits; its separations hold, as a split replays its members), attach
        nothing, merge nothing, and only move ``m``'s last event and the identifiers' last
        sighting, which is what ``flush`` writes for it; nothing else the batch does reads
        ``m`` unless the engine loads it (``known_overlaps``). So the result is the engine's,
        without loading everything ``m`` holds nor deciding the event in memory.
        """
        events = list(events)
        if self.known or self.events:
            raise RuntimeError("resolve_known is a batch's first step")
        if not events:
            return []
        wanted = {i for event in events for i in event.identifiers}
        rows = _sql(_IDENTIFIERS_BY_KEY, [[i.type for i in wanted], [i.value for i in wanted]])
        stored = {Identifier(row[1], row[2]): row for row in rows}
        candidates: dict[int, list[ResolvableEvent]] = defaultdict(list)
        rest: list[ResolvableEvent] = []
        touched: set[int] = set()  # members named by events that go to the engine
        for event in events:
            member = self._known_member(event, stored)
            if member is None:
                rest.append(event)
                touched.update(
                    owner for i in event.identifiers if (owner := stored.get(i, (None,) * 4)[3]) is not None
                )
            else:
                candidates[member].append(event)
        members = set(candidates) - touched
        latest = (
            {
                pk: (EventKey(*fields[:3]), EventKey(*fields[3:]))
                for pk, *fields in _sql(_ACTIVE_MEMBERS, [list(members)])
            }
            if members
            else {}
        )
        over_limit = self._over_limit(set(latest))
        for member, found in candidates.items():
            if (
                member in latest
                and member not in over_limit
                and all(e.key > latest[member][1] for e in found)
            ):
                first, last = latest[member][0], max(e.key for e in found)
                self.known_members[member] = MemberState(first_event=first, last_event=last)
                for event in found:
                    self.known[event.key] = member
                    self.known_mentions[event.key] = event.identifiers
                    for identifier in event.identifiers:
                        self.identifier_ids[identifier] = stored[identifier][0]
                        seen = self.known_identifiers.get(identifier)
                        if seen is None or seen[1] < event.key:
                            self.known_identifiers[identifier] = (member, event.key, stored[identifier][4])
            else:
                rest.extend(found)
        engine = {i for event in rest for i in event.identifiers}
        self.load_graph(engine, [row for identifier, row in stored.items() if identifier in engine])
        return rest

    def _known_member(self, event: ResolvableEvent, stored: dict[Identifier, tuple]) -> int | None:
        """The member that holds every identifier of this event, when the event is on time for
        them and nothing but them decides it; None otherwise (the engine decides it)."""
        if event.vouches or not event.identifiers:
            return None
        member = None
        for identifier in event.identifiers:
            row = stored.get(identifier)
            if row is None or not self.graph.merges(identifier) or identifier in self.graph.sides:
                return None
            owner, seen = row[3], _key(*row[5:])
            if (
                owner is None
                or (member is not None and owner != member)
                or (seen is not None and seen >= event.key)
            ):
                return None
            member = owner
        return member

    def _over_limit(self, members: set[int]) -> set[int]:
        """Those of these members that hold more values (alias classes counting one) of some type
        than today's rules allow: rules tightened since, which the engine would apply."""
        if not members:
            return set()
        rules = [*self.rules.by_type.values(), self.rules.custom]
        if any(rule.merges and rule.limit is not None and rule.limit < 1 for rule in rules):
            return members  # the counts below leave out single values
        unlimited = sorted(t for t, rule in self.rules.by_type.items() if self.graph.limit_of(t) is None)
        return {
            member
            for member, type_, count in _sql(_LIMITED_COUNTS, [sorted(members), unlimited])
            if (limit := self.graph.limit_of(type_)) is not None and count > limit
        }

    def known_overlaps(self) -> bool:
        """True when the engine, deciding the rest of the batch, loaded a member ``resolve_known``
        resolved events to (a late event's walk reached it): the batch must then be resolved by
        the engine alone."""
        return not self.known_members.keys().isdisjoint(
            self.loaded_members
        ) or not self.known_identifiers.keys().isdisjoint(self.loaded_identifiers)

    # --- deciding (the algorithm is inherited; this only records what happened) --------

    def _replay(self, keys: set[EventKey], refused: Set[Identifier] = frozenset()) -> None:
        dissolved = {ref for key in keys if isinstance(ref := self.member_of.get(key), int)}
        # What this batch already decided about these events is decided again (the earlier
        # decisions are dropped: their merges may not happen any more), and stored members
        # they absorbed count as dissolved by the replay.
        for key in keys & self.decisions.keys():
            dissolved.update(ref for ref in self.decisions[key].absorbed if isinstance(ref, int))
        self._load_retired_into(dissolved)
        self.replaying = True
        try:
            super()._replay(keys, refused)
        finally:
            self.replaying = False

    def _load_retired_into(self, member_ids: set[int]) -> None:
        """Members merged earlier into these: the replay re-decides their events too. One whose
        founding event founds a member again gets its id back (the replay undid its merge);
        the others' merges are told again as the replay links them."""
        if not member_ids:
            return
        found: dict[EventKey, int] = {}
        for pk, survivor, *first in _sql(_RETIRED_INTO, [sorted(member_ids)]):
            found.setdefault(EventKey(*first), pk)
            self.leads_to[pk] = survivor
        self.reuse_ids = {**found, **self.reuse_ids}  # ids the caller gave win

    def _apply(self, decision: Decision) -> None:
        super()._apply(decision)
        self.how[decision.event] = MergeRecord.Cause.REPLAY if self.replaying else MergeRecord.Cause.EVENT

    # --- writing -------------------------------------------------------------------------

    def flush(self) -> None:
        member_ids = self._write_members()
        self._write_identifiers(member_ids)
        self._write_event_identifiers()
        self._write_resolutions(member_ids)
        self._write_merges()
        self._write_changes(member_ids)

    def _write_changes(self, member_ids: dict[MemberRef, int]) -> None:
        """Members whose events changed, into identity's outbox (``MemberChange``) for members
        to refresh.

        Only those: a replay re-decides every event of a component, mostly to the member that
        already held it, and a refresh recomputes a member from all its events, so marking the
        whole component would recompute thousands of unchanged members per late event.
        """
        changed = set(self.retired) | set(self.retired.values()) | set(self.known_members)
        for key in self.decisions:
            member = member_ids[self.member_of[key]]
            before = self.stored_member_of.get(key)
            if before != member:
                changed.add(member)
                if before is not None:
                    changed.add(before)
        if changed:
            _sql(_INSERT_CHANGES, [sorted(changed)])

    def _write_members(self) -> dict[MemberRef, int]:
        """Create new members, update changed ones, retire the ones that were absorbed.

        A member re-created by a replay keeps the id of the old member founded by the same
        event, so ids stay stable when a late event changes nothing for them, and a member
        merged earlier gets its id back when the replay undoes its merge.
        """
        by_first_event = {first: pk for pk, (first, _) in self.loaded_members.items()}
        ids: dict[MemberRef, int] = {}
        to_create: list[tuple[MemberRef, MemberState]] = []
        to_update: list[tuple[int, MemberState]] = []
        for ref, state in self.graph.members.items():
            pk = (
                ref
                if isinstance(ref, int)
                else by_first_event.get(state.first_event, self.reuse_ids.get(state.first_event))
            )
            if pk is None:
                to_create.append((ref, state))
                continue
            ids[ref] = pk
            if self.loaded_members.get(pk) != (state.first_event, state.last_event):
                to_update.append((pk, state))
        to_update += self.known_members.items()
        if to_create:
            new_ids = [row[0] for row in _sql(_NEW_MEMBER_IDS, [Member._meta.db_table, len(to_create)])]
            ids.update({ref: pk for (ref, _), pk in zip(to_create, new_ids, strict=True)})
            _sql(
                _INSERT_MEMBERS,
                _member_columns([(pk, state) for (_, state), pk in zip(to_create, new_ids, strict=True)]),
            )
        if to_update:
            _sql(_UPDATE_MEMBERS, _member_columns(to_update))
        kept = set(ids.values())
        self.retired = {pk: self._survivor_of(pk, ids) for pk in self.loaded_members if pk not in kept}
        self.settled = dict(self.retired)
        self.founding = {pk: first for pk, (first, _) in self.loaded_members.items()}
        for first in self.decisions:
            # An old member whose founding event this run decided, and that does not stand,
            # leads to the member holding that event now.
            pk = self.reuse_ids.get(first)
            if pk is not None and pk not in kept and pk not in self.settled:
                survivor = self.settled[pk] = ids[self.member_of[first]]
                self.founding[pk] = first
                if self.leads_to.get(pk) != survivor:
                    self.retired[pk] = survivor
        if self.retired:
            olds, survivors = list(self.retired), list(self.retired.values())
            _sql(_RETIRE_MEMBERS, [olds, survivors])
            _sql(_REPOINT_MERGED_MEMBERS, [olds, survivors])
        return ids

    def _survivor_of(self, old: int, ids: dict[MemberRef, int]) -> int:
        """Where an old member's id now leads: the member holding its earliest event."""
        first, _ = self.loaded_members[old]
        return (
            ids[self.member_of[first]] if first in self.member_of else ids[self._final(self._absorber(old))]
        )

    def _absorber(self, old: MemberRef) -> MemberRef:
        for decision in reversed(self.decisions.values()):
            if old in decision.absorbed:
                return decision.member
        raise LookupError(f"member {old} vanished without being absorbed")

    def _write_identifiers(self, member_ids: dict[MemberRef, int]) -> None:
        """Write the identifiers whose owner or last sighting changed: stored ones by id, new ones
        by value (one statement each)."""
        touched = self.loaded_identifiers | {i for e in self.events.values() for i in e.identifiers}
        changed: list[tuple[Identifier, int | None, EventKey | None, str]] = []
        for identifier in touched:
            owner = self.graph.owner.get(identifier) if self.graph.merges(identifier) else None
            state = (
                member_ids[owner] if owner is not None else None,
                self.graph.last_seen.get(identifier),
                self.graph.members[owner].alias_class.get(identifier, "") if owner is not None else "",
            )
            if identifier not in self.identifier_ids or self.stored_identifiers.get(identifier) != state:
                changed.append((identifier, *state))
        changed += [(identifier, *state) for identifier, state in self.known_identifiers.items()]
        changed.sort(key=lambda change: (change[0].type, change[0].value))  # a stable write order
        # Stored rows are rewritten by id: an upsert probes the (type, value) index a second time
        # (random keys: a page per value once the index outgrows shared_buffers) and writes two
        # WAL records per row (ON CONFLICT's row lock, then the update); by id it is one, through
        # the primary key. Only new values go through the upsert.
        stored = [change for change in changed if change[0] in self.identifier_ids]
        new = [change for change in changed if change[0] not in self.identifier_ids]
        if stored:
            _sql(
                _UPDATE_IDENTIFIERS,
                [
                    [self.identifier_ids[i] for i, *_ in stored],
                    *_identifier_state_columns(stored),
                ],
            )
        if new:
            rows = _sql(
                _UPSERT_IDENTIFIERS,
                [
                    [i.type for i, *_ in new],
                    [i.value for i, *_ in new],
                    *_identifier_state_columns(new),
                    [self._sealed(i) for i, *_ in new],
                ],
            )
            self.identifier_ids.update({Identifier(type_, value): pk for pk, type_, value in rows})
        unmerging = [
            MemberIdentifier(
                member_id=member_ids[ref], identifier_id=self.identifier_ids[Identifier(type_, value)]
            )
            for ref, state in self.graph.members.items()
            for type_, values in state.identifiers.items()
            if not self.rules.of(type_).merges
            for value in values
        ]
        if self.retired:
            MemberIdentifier.objects.filter(member_id__in=self.retired).delete()
        if unmerging:
            MemberIdentifier.objects.bulk_create(unmerging, ignore_conflicts=True)

    def _sealed(self, identifier: Identifier) -> str:
        """A new phone's or email's value sealed for its row (stored rows keep theirs)."""
        value = self.values_to_seal.get(identifier)
        if value is None or identifier in self.identifier_ids:
            return ""
        return identifier_seal(identifier.type, identifier.value, value)

    @property
    def rules(self) -> Rules:
        return self.graph.rules

    def _write_event_identifiers(self) -> None:
        """New events' mentions are inserted; a replayed event keeps its rows (an event's
        identifiers never change) and only the ones whose ``dropped`` flipped are updated."""
        inserted, flipped = [], []
        for key, decision in self.decisions.items():
            event_id = self.event_ids[key]
            stored = key in self.stored_member_of
            dropped_before: Set[Identifier] = self.stored_dropped.get(event_id, frozenset())
            for identifier in self.events[key].identifiers:
                dropped = identifier in decision.dropped
                if not stored:
                    inserted.append((event_id, self.identifier_ids[identifier], dropped))
                elif dropped != (identifier in dropped_before):
                    flipped.append((event_id, self.identifier_ids[identifier], dropped))
        inserted += [
            (self.event_ids[key], self.identifier_ids[identifier], False)
            for key, identifiers in self.known_mentions.items()
            for identifier in identifiers
        ]
        if inserted:
            _sql(_INSERT_EVENT_IDENTIFIERS, [list(column) for column in zip(*inserted, strict=True)])
        if flipped:
            _sql(_FLIP_EVENT_IDENTIFIERS, [list(column) for column in zip(*flipped, strict=True)])

    def _write_resolutions(self, member_ids: dict[MemberRef, int]) -> None:
        new = [key for key in self.member_of if key not in self.stored_member_of]
        new += self.known
        moved = [
            key for key, ref in self.member_of.items()
            if key in self.stored_member_of and self.stored_member_of[key] != member_ids[ref]
        ]  # fmt: skip
        if new:
            _sql(
                _UPSERT_RESOLUTIONS,
                [
                    [self.event_ids[key] for key in new],
                    [
                        self.known[key] if key in self.known else member_ids[self.member_of[key]]
                        for key in new
                    ],
                    [orjson.dumps(self.problems.get(key, [])).decode() for key in new],
                ],
            )
        moves = {self.event_ids[k]: member_ids[self.member_of[k]] for k in moved}
        if self.retired:
            # Events of absorbed members that were never loaded follow their survivor. Read
            # first and then moved by key: one UPDATE joining the member walk to the table
            # is planned, without statistics, as a scan of every resolution.
            loaded = set(self.event_ids.values())
            for event_id, member_id in _sql(_RESOLUTIONS_OF_MEMBERS, [list(self.retired)]):
                if event_id not in loaded:
                    moves[event_id] = self.retired[member_id]
        if moves:
            _sql(_MOVE_RESOLUTIONS, [list(moves), list(moves.values())])

    def _write_merges(self) -> None:
        """One record for each old member this run ended, naming what linked it.

        The record's event and identifiers come from this run's own decisions (``MergeLinks``):
        the event that joined the member to the one holding its events now, and the identifiers
        of that event each side held just before. So the event resolves to the survivor and the
        identifiers are the pair's, whatever else the event or the batch carried. A retired
        member a replay re-decided is told again only when its survivor or link changed.
        """
        if not self.settled:
            return
        rule = merge_rule(self.rules)
        links = MergeLinks(self.decisions.values())
        told = {
            absorbed: (survivor, event_id, orjson.loads(identifiers))
            for absorbed, survivor, event_id, identifiers in _sql(
                _LATEST_MERGES, [sorted(set(self.settled) - set(self.loaded_members))]
            )
        }
        records = []
        for old, survivor in sorted(self.settled.items()):
            link = links.of(member=old, founded_by=self.founding[old])
            if link is None:
                raise LookupError(f"member {old} no longer stands, but nothing in this run linked it")
            identifiers = [str(i) for i in link.identifiers]
            event_id = self.event_ids[link.event]
            if told.get(old) == (survivor, event_id, identifiers):
                continue
            records.append(
                MergeRecord(
                    survivor_id=survivor,
                    absorbed_id=old,
                    event_id=event_id,
                    identifiers=identifiers,
                    rule=rule,
                    cause=self.how[link.event],
                )
            )
        MergeRecord.objects.bulk_create(records)

    def _final(self, ref: MemberRef) -> MemberRef:
        """The member ``ref`` ended up in, after later merges in the same batch."""
        while ref not in self.graph.members:
            ref = self._absorber(ref)
        return ref


def _sql(statement: str, params: list) -> list[tuple]:
    with binary_parameters_cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _identifier_state_columns(
    changes: list[tuple[Identifier, int | None, EventKey | None, str]],
) -> list[list]:
    """Owner, last sighting and alias class of identifiers, as the write statements' arrays."""
    return [
        [owner for _, owner, _, _ in changes],
        [seen.timestamp if seen else None for _, _, seen, _ in changes],
        [seen.message_id if seen else "" for _, _, seen, _ in changes],
        [seen.source_id if seen else None for _, _, seen, _ in changes],
        [alias_class for *_, alias_class in changes],
    ]


def _member_columns(members: list[tuple[int, MemberState]]) -> list[list]:
    return [
        [pk for pk, _ in members],
        [s.first_event.timestamp for _, s in members],
        [s.first_event.message_id for _, s in members],
        [s.first_event.source_id for _, s in members],
        [s.last_event.timestamp for _, s in members],
        [s.last_event.message_id for _, s in members],
        [s.last_event.source_id for _, s in members],
    ]


# Set-based reads and writes: one statement per kind, whatever the batch size. Only model
# table names are interpolated. Lookups by a list of keys walk an index once per key
# (a lateral subquery, kept from being flattened by OFFSET 0), so stale planner statistics,
# right after a bulk import or where autovacuum is late, never turn them into table scans.
_MEMBERS = Member._meta.db_table
_IDENTIFIERS = IdentifierRow._meta.db_table
_MENTIONS = EventIdentifier._meta.db_table
_RESOLUTIONS = EventResolution._meta.db_table
_MEMBER_ROWS = (
    "unnest(%b::bigint[], %b::timestamptz[], %b::text[], %b::bigint[], %b::timestamptz[], %b::text[], %b::bigint[])"
    " AS v(id, fa, fm, fs, la, lm, ls)"
)
_NEW_MEMBER_IDS = "SELECT nextval(pg_get_serial_sequence(%b, 'id')) FROM generate_series(1, %b)"
_INSERT_MEMBERS = (
    f"INSERT INTO {_MEMBERS} (id, status, merged_into_id, first_event_at, first_event_message_id, "
    "first_event_source_id, last_event_at, last_event_message_id, last_event_source_id, created_at, updated_at) "
    f"SELECT v.id, 'active', NULL, v.fa, v.fm, v.fs, v.la, v.lm, v.ls, now(), now() FROM {_MEMBER_ROWS}"
)
# Updates of a batch's rows by key find each row by a lateral index walk and update it by
# its row address: joined by key, a few hundred keys against a table without statistics are
# planned as a hash of a scan of the whole table.
_UPDATE_MEMBERS = (
    f"UPDATE {_MEMBERS} AS m SET status = 'active', merged_into_id = NULL, first_event_at = v.fa, "
    "first_event_message_id = v.fm, first_event_source_id = v.fs, last_event_at = v.la, "
    f"last_event_message_id = v.lm, last_event_source_id = v.ls, updated_at = now() FROM (SELECT v.*, x.ctid AS tid "
    f"FROM {_MEMBER_ROWS} CROSS JOIN LATERAL (SELECT ctid FROM {_MEMBERS} WHERE id = v.id OFFSET 0) AS x) AS v "
    "WHERE m.ctid = v.tid"
)
_RETIRE_MEMBERS = (
    f"UPDATE {_MEMBERS} AS m SET status = 'merged', merged_into_id = v.survivor, updated_at = now() "
    "FROM unnest(%b::bigint[], %b::bigint[]) AS v(id, survivor) WHERE m.id = v.id"
)
_REPOINT_MERGED_MEMBERS = (
    f"UPDATE {_MEMBERS} AS m SET merged_into_id = x.survivor FROM (SELECT v.survivor, a.id "
    "FROM unnest(%b::bigint[], %b::bigint[]) AS v(old, survivor) "
    f"CROSS JOIN LATERAL (SELECT id FROM {_MEMBERS} WHERE merged_into_id = v.old OFFSET 0) AS a) AS x "
    "WHERE m.id = x.id"
)
_UPSERT_IDENTIFIERS = (
    f"INSERT INTO {_IDENTIFIERS} (type, value, member_id, last_seen_at, last_seen_message_id, "
    "last_seen_source_id, alias_class, sealed, created_at) SELECT v.t, v.val, v.m, v.sa, v.sm, v.ss, v.ac, v.sl, now() "
    "FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::timestamptz[], %b::text[], %b::bigint[], %b::text[], "
    "%b::text[]) AS v(t, val, m, sa, sm, ss, ac, sl) ON CONFLICT (type, value) DO UPDATE SET member_id = EXCLUDED.member_id, "
    "last_seen_at = EXCLUDED.last_seen_at, last_seen_message_id = EXCLUDED.last_seen_message_id, "
    "last_seen_source_id = EXCLUDED.last_seen_source_id, alias_class = EXCLUDED.alias_class "
    "RETURNING id, type, value"
)
_UPDATE_IDENTIFIERS = (
    f"UPDATE {_IDENTIFIERS} AS i SET member_id = v.m, last_seen_at = v.sa, last_seen_message_id = v.sm, "
    "last_seen_source_id = v.ss, alias_class = v.ac FROM (SELECT v.*, x.ctid AS tid FROM unnest(%b::bigint[], "
    "%b::bigint[], %b::timestamptz[], %b::text[], %b::bigint[], %b::text[]) AS v(id, m, sa, sm, ss, ac) "
    f"CROSS JOIN LATERAL (SELECT ctid FROM {_IDENTIFIERS} WHERE id = v.id OFFSET 0) AS x) AS v WHERE i.ctid = v.tid"
)
# One unique-index probe per (type, value) pair. A plain join is planned, for a batch's
# thousand keys against a table without statistics, as a hash of the whole identifier table.
_IDENTIFIERS_BY_KEY = (
    "SELECT i.id, i.type, i.value, i.member_id, i.alias_class, i.last_seen_at, i.last_seen_message_id, i.last_seen_source_id "
    f"FROM unnest(%b::text[], %b::text[]) AS k(t, v) CROSS JOIN LATERAL (SELECT * FROM {_IDENTIFIERS} "
    "WHERE type = k.t AND value = k.v OFFSET 0) AS i"
)
# Per member and limited type (those not named: the rule for unnamed types has a limit), how
# many values it holds, the values an alias made one counting once; only where two or more.
_LIMITED_COUNTS = (
    "SELECT c.member_id, c.type, c.n FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL ("
    "SELECT member_id, type, count(DISTINCT CASE WHEN alias_class <> '' THEN alias_class ELSE value END) AS n "
    f"FROM {_IDENTIFIERS} WHERE member_id = k.id AND type <> ALL(%b::text[]) GROUP BY member_id, type "
    "HAVING count(*) > 1 OFFSET 0) AS c"
)
_ACTIVE_MEMBERS = (
    "SELECT m.id, m.first_event_at, m.first_event_message_id, m.first_event_source_id, m.last_event_at, "
    "m.last_event_message_id, m.last_event_source_id FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT * FROM {_MEMBERS} WHERE id = k.id AND status = 'active' OFFSET 0) AS m"
)
_IDENTIFIERS_HELD = (
    "SELECT i.id, i.type, i.value, i.member_id, i.alias_class, i.last_seen_at, i.last_seen_message_id, i.last_seen_source_id "
    f"FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL (SELECT * FROM {_IDENTIFIERS} WHERE member_id = k.id "
    "OFFSET 0) AS i"
)
# The identifier of each row is read by its own lateral lookup too: joined normally, a
# planner that believes the identifier table small hashes all of it once per statement.
_UNMERGING_HELD = (
    "SELECT i.id, i.type, i.value, h.member_id FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT * FROM {MemberIdentifier._meta.db_table} WHERE member_id = k.id OFFSET 0) AS h "
    f"CROSS JOIN LATERAL (SELECT id, type, value FROM {_IDENTIFIERS} WHERE id = h.identifier_id OFFSET 0) AS i"
)
_MENTIONING_EVENTS = (
    "SELECT DISTINCT m.event_id FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT event_id FROM {_MENTIONS} WHERE identifier_id = k.id OFFSET 0) AS m"
)
_MENTIONS_OF_EVENTS = (
    "SELECT m.event_id, i.type, i.value, m.identifier_id, m.dropped FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT * FROM {_MENTIONS} WHERE event_id = k.id OFFSET 0) AS m "
    f"CROSS JOIN LATERAL (SELECT type, value FROM {_IDENTIFIERS} WHERE id = m.identifier_id OFFSET 0) AS i"
)
# For each identifier, the events that accepted it (mentions not dropped) with the identifiers of
# the given types each accepted beside it: what a late event's walk needs to tell a refused
# mention (``identity.resolution``, "Refused mentions") without loading every event around a
# shared device.
_ANCHORS = (
    "SELECT x.identifier_id, x.event_id, i.type, e.timestamp, e.message_id, e.source_id "
    f"FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL (SELECT identifier_id, event_id FROM {_MENTIONS} "
    "WHERE identifier_id = k.id AND NOT dropped OFFSET 0) AS x "
    f"CROSS JOIN LATERAL (SELECT identifier_id FROM {_MENTIONS} WHERE event_id = x.event_id AND NOT dropped "
    "OFFSET 0) AS y "
    f"CROSS JOIN LATERAL (SELECT type FROM {_IDENTIFIERS} WHERE id = y.identifier_id AND type = ANY(%b::text[]) "
    "OFFSET 0) AS i "
    f"CROSS JOIN LATERAL (SELECT timestamp, message_id, source_id FROM {Event._meta.db_table} WHERE id = x.event_id "
    "OFFSET 0) AS e"
)
_EVENTS_AND_MEMBERS = (
    "SELECT e.id, e.timestamp, e.message_id, e.source_id, e.type, r.member_id FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT id, timestamp, message_id, source_id, type FROM {Event._meta.db_table} "
    "WHERE id = k.id OFFSET 0) AS e "
    f"LEFT JOIN LATERAL (SELECT member_id FROM {_RESOLUTIONS} WHERE event_id = e.id OFFSET 0) AS r ON true"
)
_FLIP_EVENT_IDENTIFIERS = (
    f"UPDATE {_MENTIONS} AS m SET dropped = v.d FROM unnest(%b::bigint[], %b::bigint[], %b::boolean[]) "
    "AS v(e, i, d) WHERE m.event_id = v.e AND m.identifier_id = v.i"
)
_INSERT_EVENT_IDENTIFIERS = (
    f"INSERT INTO {EventIdentifier._meta.db_table} (event_id, identifier_id, dropped) "
    "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::boolean[])"
)
_UPSERT_RESOLUTIONS = (
    f"INSERT INTO {EventResolution._meta.db_table} (event_id, member_id, problems, resolved_at) "
    "SELECT v.e, v.m, v.p::jsonb, now() FROM unnest(%b::bigint[], %b::bigint[], %b::text[]) AS v(e, m, p) "
    "ON CONFLICT (event_id) DO UPDATE SET member_id = EXCLUDED.member_id, problems = EXCLUDED.problems, "
    "resolved_at = now()"
)
_MOVE_RESOLUTIONS = (
    f"UPDATE {_RESOLUTIONS} AS r SET member_id = v.m, resolved_at = now() FROM (SELECT v.m, x.ctid AS tid "
    "FROM unnest(%b::bigint[], %b::bigint[]) AS v(e, m) "
    f"CROSS JOIN LATERAL (SELECT ctid FROM {_RESOLUTIONS} WHERE event_id = v.e OFFSET 0) AS x) AS v "
    "WHERE r.ctid = v.tid"
)
_RESOLUTIONS_OF_MEMBERS = (
    "SELECT e.event_id, k.id FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT event_id FROM {_RESOLUTIONS} WHERE member_id = k.id OFFSET 0) AS e"
)
_RETIRED_INTO = (
    "SELECT m.id, m.merged_into_id, m.first_event_at, m.first_event_message_id, m.first_event_source_id "
    f"FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL (SELECT * FROM {_MEMBERS} "
    "WHERE merged_into_id = k.id OFFSET 0) AS m"
)
_LATEST_MERGES = (
    "SELECT r.absorbed_id, r.survivor_id, r.event_id, r.identifiers::text FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT * FROM {MergeRecord._meta.db_table} WHERE absorbed_id = k.id "
    "ORDER BY id DESC LIMIT 1) AS r"
)
_INSERT_CHANGES = (
    f"INSERT INTO {MemberChange._meta.db_table} (member_id, changed_at) SELECT unnest(%b::bigint[]), now()"
)
