"""Identity resolution: which member each event belongs to. Pure (no ORM).

**The definition.** Members are what you get by resolving the events one at a time in
event-time order (timestamp, then messageId, then source), each against the graph the
earlier events built. For one event, its identifiers are taken in priority order (highest
first); each is *accepted* if joining its owner (or adding its value) keeps every member
within its per-type limits, and *dropped for matching* otherwise. The members owning accepted
identifiers merge into one, the survivor being the member whose earliest event is earliest;
if none owns any, the event founds a new member. Accepted identifiers without an owner are
attached to that member. Types that never merge are attached but never looked up.

Separations recorded by staff splits are constraints like limits: an identifier whose
acceptance would put both sides of a separation in one member is dropped too.

**Aliases.** An event that *vouches* (a Segment ``alias``: ``previousId`` and ``userId`` are one
person) states that the identifiers it carries are one person's. It links like any other event,
under the same limits and separations, with one difference: values of one type that a
vouching event carries count as *one* value toward that type's limit, from then on, in the
member that accepts them (an alias class). So a customer whose login id changed holds both
user ids under a one-``user_id`` limit, while two different people, each with an alias class,
still never share a member through a device. The classes are member state like the
identifiers: rebuilt by a replay, carried by a merge, dropped with a member.

**Arrival order does not matter.** An event that arrives in order (later than every event of
every member it touches, and later than every event that mentioned one of its identifiers)
sees exactly the graph the definition would show it, so it is resolved incrementally. A
late event instead re-resolves its *component*: the events linked to it through mergeable
identifiers (dropped ones included), which always consists of whole members and interacts
with nothing outside it, except through *refused* mentions (below).
``tests/identity/test_resolution.py`` checks this with generated event streams in every
arrival order.

**Refused mentions.** A shared store iPad would otherwise link every customer who ever
checked out on it into one component that grows with the stream. The walk does not cross an
identifier ``z`` from an event ``f`` when ``f``'s mention of ``z`` is refused whatever the
replay decides:

- ``f`` is not an alias, and no separation is in play;
- ``f``'s first identifier in priority order, ``u``, is of a type ``τ`` that merges with a
  limit of one;
- ``f``'s own decision so far (if it has one) dropped ``z``;
- an event ``g`` earlier than ``f`` accepted ``z`` together with a value ``w`` of type ``τ``.

Why that is exact. Let S be the events the walk reached and T the rest; every identifier an
S event mentions is either crossed (all its mentioners are in S) or refused from every S
event that mentions it (the set Z). By induction over event time, every member is all-S or
all-T, no S event accepts an identifier of Z, and T's decisions are those it had: an S event
accepts ``u`` first (held is empty and ``u``'s owner is within its limits), so its chosen
members hold a ``τ`` value; the owner of ``z`` is the member that holds ``g``'s events (a
T member: an S event that accepted ``z`` would have had it crossed), which holds ``w`` from
``g`` on, and is not chosen (the S event's other identifiers are owned by S members); so
taking ``z`` would put two ``τ`` classes in one member (no alias joins them: ``f`` is not
one, and classes never span members) and ``z`` is dropped, before and after the late
event, and in the replay, which sees T's members as they are now (they hold ``w`` too). A T
event reads only T's identifiers and Z's, owned by T members, so nothing S does reaches it.
Replaying S alone, against T as it stands, therefore gives the event-order result, and Z's
``last_seen`` is kept (T's events still mention them).

The other way round: the walk crosses ``z`` (its owner is re-decided, e.g. the customer who
holds the iPad is late) but leaves out a mentioner ``f`` whose mention is refused as above
with ``g`` earlier than every late event. ``g``'s decision stands (decisions of events before
the earliest late one never change), so from ``g`` on ``z``'s owner is the S member holding
``w``; ``f``'s chosen members are T's (it accepted nothing the walk crossed, or it would
have been reached), so ``f`` drops ``z`` before and after, and is not re-decided. ``z``
keeps its ``last_seen`` too.

**What linked them.** Each decision says through which of its identifiers the event joined
each member it chose, and ``MergeLinks`` reads a run's decisions to tell, for a member that no
longer stands, the event that joined it to the member holding its events and the identifiers
each side held: the merge history names that, never the event that happened to trigger a
replay nor identifiers a decision dropped.
"""

from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Set
from dataclasses import dataclass, field
from datetime import datetime

from identity.identifiers import Identifier
from identity.rules import Rules


@dataclass(frozen=True, order=True, slots=True)
class EventKey:
    """An event's place in event time; unique per event and independent of arrival order."""

    timestamp: datetime
    message_id: str
    source_id: int


@dataclass(frozen=True, slots=True)
class ResolvableEvent:
    key: EventKey
    identifiers: frozenset[Identifier]
    #: True for an alias: its values of one type count as one toward that type's limit.
    vouches: bool = False


MemberRef = Hashable


@dataclass(frozen=True, slots=True)
class Separation:
    """Two sets of identifiers that belong to different people (a staff split): no member
    may ever hold identifiers from both sides."""

    one: frozenset[Identifier]
    other: frozenset[Identifier]


@dataclass(slots=True)
class MemberState:
    first_event: EventKey
    last_event: EventKey
    identifiers: dict[str, set[str]] = field(default_factory=dict)
    #: Held identifiers of limited types that aliases made one (alias classes): identifier ->
    #: the smallest value of its class. Empty for a member no alias touched.
    alias_class: dict[Identifier, str] = field(default_factory=dict)

    def holds(self) -> Iterable[Identifier]:
        for type_, values in self.identifiers.items():
            for value in values:
                yield Identifier(type_, value)


@dataclass(frozen=True, slots=True)
class Decision:
    """What resolving one event did to the graph.

    ``joined`` says through what the event joined each member it chose (the survivor, then
    the absorbed ones): the identifiers of the event that member held just before. A merge
    is told by these, never by the event's other identifiers, which may be dropped ones that
    belong to someone else.
    """

    event: EventKey
    member: MemberRef
    created: bool
    absorbed: tuple[MemberRef, ...]
    attached: tuple[Identifier, ...]
    dropped: tuple[Identifier, ...]
    joined: tuple[tuple[MemberRef, tuple[Identifier, ...]], ...] = ()

    def through(self, *members: MemberRef) -> tuple[Identifier, ...]:
        """The identifiers through which the event joined these members (sorted)."""
        wanted = set(members)
        return tuple(sorted(i for ref, held in self.joined if ref in wanted for i in held))


@dataclass(frozen=True, slots=True)
class MergeLink:
    """Why a member no longer stands on its own: ``event`` joined it to the member that holds
    its events now, through ``identifiers`` (the event's, each held just before by the side
    that stands or by the side that was absorbed)."""

    event: EventKey
    identifiers: tuple[Identifier, ...]


class MergeLinks:
    """The links that a resolution run's decisions (``InMemoryResolver.decisions.values()``,
    in order) made.

    A member that stood before the run and does not after is told by its founding event: if
    that event founded a member again, the decision that absorbed that member linked it; if
    the event joined an existing member straight away (the run saw earlier events the old
    member never saw), that event itself linked it. A member absorbed by reference (one the
    run loaded, not re-created) is told by the decision that absorbed it.
    """

    def __init__(self, decisions: Iterable[Decision]) -> None:
        self._of_event: dict[EventKey, Decision] = {}
        self._absorber: dict[MemberRef, Decision] = {}
        for decision in decisions:
            self._of_event[decision.event] = decision
            for ref in decision.absorbed:
                self._absorber[ref] = decision

    def of(self, *, founded_by: EventKey | None = None, member: MemberRef | None = None) -> MergeLink | None:
        """The link that ended the member ``member`` or the one ``founded_by`` founded; None
        when this run did not end it."""
        if member is not None and (absorber := self._absorber.get(member)) is not None:
            return MergeLink(absorber.event, absorber.through(absorber.member, member))
        first = self._of_event.get(founded_by) if founded_by is not None else None
        if first is None:
            return None
        if not first.created:
            return MergeLink(first.event, first.through(first.member, *first.absorbed))
        absorber = self._absorber.get(first.member)
        if absorber is None:
            return None  # the member it founded stands
        return MergeLink(absorber.event, absorber.through(absorber.member, first.member))


class IdentityGraph:
    """Identifier owners and member contents: the state resolution reads and writes.

    ``new_ref`` names a member founded by an event (the in-memory resolver uses the event
    key itself; the database layer hands out ids).
    """

    def __init__(
        self,
        rules: Rules,
        new_ref: Callable[[EventKey], MemberRef] = lambda key: key,
        separations: Iterable[Separation] = (),
    ) -> None:
        self.rules = rules
        self.new_ref = new_ref
        # Per type, read for every identifier of every event: (merges, limit, priority).
        self._type_rules: dict[str, tuple[bool, int | None, int]] = {}
        self.sides: dict[Identifier, set[tuple[int, int]]] = defaultdict(set)
        for index, separation in enumerate(separations):
            for side, identifiers in enumerate((separation.one, separation.other)):
                for identifier in identifiers:
                    if self.merges(identifier):  # a type that never merges joins nobody anyway
                        self.sides[identifier].add((index, side))
        self.owner: dict[Identifier, MemberRef] = {}
        self.members: dict[MemberRef, MemberState] = {}
        self.last_seen: dict[Identifier, EventKey] = {}

    def _rule_of(self, type_: str) -> tuple[bool, int | None, int]:
        found = self._type_rules.get(type_)
        if found is None:
            rule = self.rules.of(type_)
            found = self._type_rules[type_] = (
                rule.merges,
                rule.limit if rule.merges else None,
                rule.priority,
            )
        return found

    def merges(self, identifier: Identifier) -> bool:
        return self._rule_of(identifier.type)[0]

    def is_on_time(self, event: ResolvableEvent) -> bool:
        """True when the event is later than everything its resolution depends on."""
        for identifier in event.identifiers:
            if not self.merges(identifier):
                continue
            seen = self.last_seen.get(identifier)
            if seen is not None and seen >= event.key:
                return False
            owner = self.owner.get(identifier)
            if owner is not None and self.members[owner].last_event >= event.key:
                return False
        return True

    def accepted_first(self, event: ResolvableEvent) -> Identifier | None:
        """The identifier ``u`` that ``event`` always accepts first, when its type merges with a
        limit of one (so the event never joins a member holding another value of that type);
        None when the event is an alias, separations are in play, or its first identifier in
        priority order has another limit (the module's "Refused mentions")."""
        if event.vouches or self.sides:
            return None
        first = min(
            (i for i in event.identifiers if self.merges(i)),
            key=lambda i: (-self._rule_of(i.type)[2], i.type, i.value),
            default=None,
        )
        return first if first is not None and self._limit(first.type) == 1 else None

    def limit_of(self, type_: str) -> int | None:
        """How many values of the type one member may hold; None: no limit, or it never merges."""
        return self._limit(type_)

    def _limit(self, type_: str) -> int | None:
        return self._rule_of(type_)[1]

    def _by_priority(self, identifiers: Iterable[Identifier]) -> list[Identifier]:
        return sorted(identifiers, key=lambda i: (-self._rule_of(i.type)[2], i.type, i.value))

    def resolve(self, event: ResolvableEvent) -> Decision:
        chosen: set[MemberRef] = set()
        # Values of each limited type the chosen members plus the accepted identifiers hold,
        # and the sides of separations they are on.
        held: dict[str, frozenset[str]] = {}
        # The chosen members' alias classes; with no alias in play values count one each.
        classes: dict[Identifier, str] = {}
        on_sides: frozenset[tuple[int, int]] = frozenset()
        accepted: list[Identifier] = []
        dropped: list[Identifier] = []
        joined_through: dict[MemberRef, list[Identifier]] = defaultdict(list)
        limit_of = self._limit
        for identifier in self._by_priority(i for i in event.identifiers if self.merges(i)):
            owner = self.owner.get(identifier)
            joining = [(identifier.type, {identifier.value})]
            joining_classes = classes
            if owner is not None and owner not in chosen:
                joining += self.members[owner].identifiers.items()
                if self.members[owner].alias_class:
                    joining_classes = {**classes, **self.members[owner].alias_class}
            # ``held`` is within every limit, so only the types this identifier adds to can break one.
            grown: dict[str, frozenset[str]] = {}
            limits: dict[str, int] = {}
            for type_, values in joining:
                limit = limit_of(type_)
                if limit is not None:
                    limits[type_] = limit
                    grown[type_] = grown.get(type_, held.get(type_, frozenset())) | values
            if joining_classes or event.vouches:
                vouched = [*accepted, identifier] if event.vouches else []
                counts = {t: _class_count(t, values, joining_classes, vouched) for t, values in grown.items()}
            else:
                counts = {t: len(values) for t, values in grown.items()}
            tentative_sides = on_sides | self._sides_of(identifier, owner if owner not in chosen else None)
            if all(count <= limits[type_] for type_, count in counts.items()) and not any(
                (index, 1 - side) in tentative_sides for index, side in tentative_sides
            ):
                held = {**held, **grown}
                classes = joining_classes
                on_sides = tentative_sides
                accepted.append(identifier)
                if owner is not None:
                    chosen.add(owner)
                    joined_through[owner].append(identifier)
            else:
                dropped.append(identifier)

        created = not chosen
        if created:
            member = self.new_ref(event.key)
            self.members[member] = MemberState(first_event=event.key, last_event=event.key)
            absorbed: tuple[MemberRef, ...] = ()
        else:
            member = min(chosen, key=lambda ref: self.members[ref].first_event)
            absorbed = tuple(
                sorted((ref for ref in chosen if ref != member), key=lambda r: self.members[r].first_event)
            )
            for ref in absorbed:
                self._absorb(survivor=member, absorbed=ref)

        state = self.members[member]
        state.last_event = max(state.last_event, event.key)
        attached = []
        for identifier in accepted:
            if identifier not in self.owner:
                self.owner[identifier] = member
                state.identifiers.setdefault(identifier.type, set()).add(identifier.value)
                attached.append(identifier)
        if event.vouches:
            self._join_alias_classes(state, accepted)
        for identifier in event.identifiers:
            if not self.merges(identifier):
                values = state.identifiers.setdefault(identifier.type, set())
                if identifier.value not in values:
                    values.add(identifier.value)
                    attached.append(identifier)
            else:
                self.last_seen[identifier] = max(self.last_seen.get(identifier, event.key), event.key)
        joined = tuple((ref, tuple(joined_through[ref])) for ref in (() if created else (member, *absorbed)))
        return Decision(event.key, member, created, absorbed, tuple(attached), tuple(dropped), joined)

    def _join_alias_classes(self, state: MemberState, vouched: list[Identifier]) -> None:
        """Make the accepted values of each limited type of a vouching event one alias class
        (with the classes they were in), named by its smallest value: the same name in
        whatever order the aliases came."""
        for type_ in {i.type for i in vouched}:
            if self._limit(type_) is None:
                continue  # no limit: nothing to count as one
            values = {i.value for i in vouched if i.type == type_}
            if len(values) < 2:
                continue
            names = {state.alias_class.get(Identifier(type_, v), v) for v in values}
            members = values | {
                i.value for i, name in state.alias_class.items() if i.type == type_ and name in names
            }
            name = min(members)
            for value in members:
                state.alias_class[Identifier(type_, value)] = name

    def _sides_of(self, identifier: Identifier, joining: MemberRef | None) -> frozenset[tuple[int, int]]:
        if not self.sides:
            return frozenset()
        found = set(self.sides.get(identifier, ()))
        if joining is not None:
            for held in self.members[joining].holds():
                found |= self.sides.get(held, set())
        return frozenset(found)

    def _absorb(self, *, survivor: MemberRef, absorbed: MemberRef) -> None:
        target, source = self.members[survivor], self.members.pop(absorbed)
        target.first_event = min(target.first_event, source.first_event)
        target.last_event = max(target.last_event, source.last_event)
        for identifier in source.holds():
            target.identifiers.setdefault(identifier.type, set()).add(identifier.value)
            if self.owner.get(identifier) == absorbed:
                self.owner[identifier] = survivor
        target.alias_class.update(source.alias_class)

    def forget(self, members: Iterable[MemberRef], mentioned: Iterable[Identifier]) -> None:
        """Remove members and what their events mentioned (``mentioned``: identifiers only these
        events mention), before their events are replayed."""
        for ref in members:
            state = self.members.pop(ref, None)
            if state is not None:
                for identifier in state.holds():
                    if self.owner.get(identifier) == ref:
                        del self.owner[identifier]
        for identifier in mentioned:
            self.last_seen.pop(identifier, None)


def _class_count(
    type_: str, values: frozenset[str], classes: dict[Identifier, str], vouched: list[Identifier]
) -> int:
    """How many values of ``type_`` these are toward its limit: the values an alias made one
    (``classes``, and those of a vouching event being resolved) count once."""
    parent: dict[str, str] = {}

    def root(value: str) -> str:
        while parent.get(value, value) != value:
            value = parent[value]
        return value

    def join(one: str, other: str) -> None:
        parent[root(one)] = root(other)

    for value in values:
        name = classes.get(Identifier(type_, value))
        if name is not None:
            join(value, name)
    together = [i.value for i in vouched if i.type == type_ and i.value in values]
    for value in together[1:]:
        join(value, together[0])
    return len({root(value) for value in values})


class InMemoryResolver:
    """The whole resolution over events held in memory: incremental when events arrive in
    order, component replay when one arrives late. The reference for the database engine,
    and the engine of full rebuilds."""

    def __init__(self, rules: Rules, separations: Iterable[Separation] = ()) -> None:
        self.graph = IdentityGraph(rules, separations=separations)
        self.events: dict[EventKey, ResolvableEvent] = {}
        self.mentions: dict[Identifier, set[EventKey]] = defaultdict(set)
        self.member_of: dict[EventKey, MemberRef] = {}
        self.events_of: dict[MemberRef, set[EventKey]] = defaultdict(set)
        #: What this resolver decided, in order: each event's latest decision only (a replay
        #: drops the decisions of the events it re-decides, in time proportional to those).
        #: ``MergeLinks`` reads it.
        self.decisions: dict[EventKey, Decision] = {}
        #: The events whose decision above accepted each mergeable identifier (what ``anchors``
        #: reads: a shared device has thousands of mentions and few acceptances).
        self.accepted_by: dict[Identifier, set[EventKey]] = defaultdict(set)
        self.replays = 0

    # Hooks for a resolver whose graph lives in a database and is loaded as needed.
    def load_graph(self, identifiers: Iterable[Identifier]) -> None:
        """Make the graph around these identifiers (owners, their members) current."""

    def load_mentions(self, identifiers: Iterable[Identifier]) -> None:
        """Make ``mentions`` complete for these identifiers (and hold the events it names)."""

    def anchors(self, identifiers: Iterable[Identifier]) -> dict[Identifier, dict[str, EventKey]]:
        """For each identifier, per type with a limit of one: the earliest event that accepted
        it together with a value of that type (what "Refused mentions" calls ``g``)."""
        found: dict[Identifier, dict[str, EventKey]] = {}
        for identifier in identifiers:
            earliest = found[identifier] = {}
            for key in self.accepted_by.get(identifier, ()):
                decision = self.decisions.get(key)
                if decision is None or identifier in decision.dropped:
                    continue  # ``decisions`` was cleared for a new run: this one tells nothing
                for other in self.events[key].identifiers:
                    if (
                        self.graph.limit_of(other.type) == 1
                        and other not in decision.dropped
                        and (other.type not in earliest or key < earliest[other.type])
                    ):
                        earliest[other.type] = key
        return found

    def dropped_by(self, key: EventKey) -> Collection[Identifier] | None:
        """What the event's current decision dropped; None when it has none yet (a new event)."""
        decision = self.decisions.get(key)
        return None if decision is None else decision.dropped

    def add(self, event: ResolvableEvent) -> None:
        if event.key in self.events:
            return  # resolving an event twice changes nothing
        self.load_graph(event.identifiers)
        self._register(event)
        if self.graph.is_on_time(event):
            self._apply(self.graph.resolve(event))
        else:
            self.replays += 1
            self._replay(*self.closure(event))

    def add_batch(self, events: Iterable[ResolvableEvent]) -> None:
        """Resolve several events as ``add`` would, with one replay for all the late ones.

        Events are taken in event-time order; a late one is set aside, and at the end the
        components of the set-aside events (as the whole batch links them) are replayed
        together, once. An event resolved in passing that a set-aside one links to is in that
        component and is re-resolved with it; one that nothing links to a set-aside event was
        never influenced by it. So the result is ``add``'s, and a batch whose late events
        share a large component (a shared store device links thousands of customers)
        re-resolves it once instead of once per late event.
        """
        late: list[ResolvableEvent] = []
        for event in sorted(events, key=lambda e: e.key):
            if event.key in self.events:
                continue  # resolving an event twice changes nothing
            self.load_graph(event.identifiers)
            self._register(event)
            if self.graph.is_on_time(event):
                self._apply(self.graph.resolve(event))
            else:
                late.append(event)
        if late:
            self.replays += 1
            self._replay(*self.closure(*late))

    def _register(self, event: ResolvableEvent) -> None:
        self.events[event.key] = event
        for identifier in event.identifiers:
            if self.graph.merges(identifier):
                self.mentions[identifier].add(event.key)

    def closure(self, *events: ResolvableEvent, narrow: bool = True) -> tuple[set[EventKey], set[Identifier]]:
        """What a replay of these (late) events re-decides: the events linked to them through
        mergeable identifiers, transitively, except through refused mentions (the module's
        "Refused mentions"); and the identifiers those events share with events outside it.
        ``narrow=False``: the whole component (every decision may change, e.g. after a split)."""
        found = {event.key for event in events}
        if not narrow or not events:
            return self.component_of(events), set()
        since = min(found)  # decisions of earlier events stand whatever the late ones do
        level = list(events)
        crossed: set[Identifier] = set()
        mentioned: set[Identifier] = set()
        anchors: dict[Identifier, dict[str, EventKey]] = {}
        while level:
            fresh: set[Identifier] = set()
            maybe_refused: list[tuple[ResolvableEvent, Identifier, str]] = []
            for current in level:
                first = self.graph.accepted_first(current)
                dropped = self.dropped_by(current.key) if first is not None else None
                for identifier in current.identifiers:
                    if identifier in crossed or not self.graph.merges(identifier):
                        continue
                    mentioned.add(identifier)
                    if (
                        first is not None
                        and identifier != first
                        and (dropped is None or identifier in dropped)
                    ):
                        maybe_refused.append((current, identifier, first.type))
                    else:
                        fresh.add(identifier)
            wanted = {i for _, i, _ in maybe_refused if i not in fresh and i not in anchors}
            if wanted:
                anchors.update(self.anchors(wanted))  # one load per level, like the mentions
            for current, identifier, refusing in maybe_refused:
                anchor = anchors.get(identifier, {}).get(refusing)
                if anchor is None or not anchor < current.key:
                    fresh.add(identifier)
            fresh -= crossed
            crossed |= fresh
            self.load_mentions(fresh)  # one level of the walk at a time: one load per level
            # A crossed identifier's mentioners, but those whose mention of it is refused by an
            # anchor earlier than every late event (its owner is re-decided, not them).
            reached: list[tuple[Identifier, ResolvableEvent, str | None]] = []
            for identifier in fresh:
                for key in self.mentions[identifier] - found:
                    mentioner = self.events[key]
                    first = self.graph.accepted_first(mentioner)
                    dropped = self.dropped_by(key) if first is not None else None
                    refused_as = (
                        first.type if first is not None and dropped and identifier in dropped else None
                    )
                    reached.append((identifier, mentioner, refused_as))
            wanted = {i for i, _, refused_as in reached if refused_as is not None and i not in anchors}
            if wanted:
                anchors.update(self.anchors(wanted))
            level = []
            for identifier, mentioner, refused_as in reached:
                anchor = anchors.get(identifier, {}).get(refused_as) if refused_as is not None else None
                if mentioner.key not in found and (anchor is None or not anchor < since):
                    found.add(mentioner.key)
                    level.append(mentioner)
        shared = {i for i in crossed if self.mentions[i] - found}
        return found, (mentioned - crossed) | shared

    def component_of(self, events: Iterable[ResolvableEvent]) -> set[EventKey]:
        """The events linked to these through mergeable identifiers, transitively."""
        found = {event.key for event in events}
        level = [self.events[key] for key in found]
        crossed: set[Identifier] = set()
        while level:
            fresh = {
                i for event in level for i in event.identifiers if i not in crossed and self.graph.merges(i)
            }
            crossed |= fresh
            self.load_mentions(fresh)
            level = []
            for identifier in fresh:
                for key in self.mentions[identifier] - found:
                    found.add(key)
                    level.append(self.events[key])
        return found

    def replay_members_of(self, keys: set[EventKey]) -> None:
        """Re-resolve the components of these (held) events from scratch, e.g. after a split."""
        self._replay(*self.closure(*(self.events[key] for key in sorted(keys)), narrow=False))

    def _replay(self, keys: set[EventKey], refused: Set[Identifier] = frozenset()) -> None:
        """Re-resolve these events from scratch (after late events, or a split), against the
        rest of the graph as it stands; ``refused`` are identifiers these events mention
        that events outside them mention too (``closure``)."""
        members = {self.member_of[key] for key in keys if key in self.member_of}
        mentioned = {i for key in keys for i in self.events[key].identifiers} - refused
        for key in keys:
            self._forget_decision(key)
        self.graph.forget(members, mentioned)
        for ref in members:
            for key in self.events_of.pop(ref, set()):
                self.member_of.pop(key, None)
        for key in sorted(keys):
            self._apply(self.graph.resolve(self.events[key]))

    def _forget_decision(self, key: EventKey) -> None:
        decision = self.decisions.pop(key, None)
        if decision is not None:
            for identifier in self.events[key].identifiers:
                self.accepted_by[identifier].discard(key)

    def _apply(self, decision: Decision) -> None:
        self._forget_decision(decision.event)
        self.decisions[decision.event] = decision
        for identifier in self.events[decision.event].identifiers:
            if identifier not in decision.dropped and self.graph.merges(identifier):
                self.accepted_by[identifier].add(decision.event)
        for ref in decision.absorbed:
            for key in self.events_of.pop(ref, set()):
                self.member_of[key] = decision.member
                self.events_of[decision.member].add(key)
        self.member_of[decision.event] = decision.member
        self.events_of[decision.member].add(decision.event)

    def partition(self) -> frozenset[frozenset[EventKey]]:
        """Which events belong together: the answer that must not depend on arrival order."""
        return frozenset(frozenset(keys) for keys in self.events_of.values() if keys)


def resolve_in_event_order(
    events: Iterable[ResolvableEvent], rules: Rules, separations: Iterable[Separation] = ()
) -> InMemoryResolver:
    """The definition, literally: every event in event-time order against one graph."""
    resolver = InMemoryResolver(rules, separations)
    for event in sorted(events, key=lambda e: e.key):
        resolver.add(event)
    return resolver
