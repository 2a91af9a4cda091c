"""Writes of tag and segment definitions, static lists and manual tags: what staff do through
the API and the console.

Rules are validated with ``rules.rule_parse`` (every problem with its path), must name tags
and segments that exist, and may not lead back to themselves through the tags and segments
they read. Definition writes take one transaction-scoped lock, so two edits made at once
cannot build a cycle or delete what the other starts to read. A created or edited rule is
recomputed in full by Celery after the commit (``members.tasks.segment_recompute`` /
``tag_recompute``). Built-in segments are the platform's: they are copied, never edited or
deleted; computed tags (RFM group, lifecycle stage, channel preference) are read-only.

A static list is set from member ids or from CSV rows of any identifier type, normalized as
at ingestion and looked up a batch at a time. Manual tags act on the member an id resolves
to (the survivor of a merge), are recorded in ``TagChange`` with the staff user, and are
idempotent: adding a tag the member has, or removing one they lack, records nothing.
"""

import codecs
import csv
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from celery.exceptions import CeleryError
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from events.tasks import process_pending_enqueue
from identity.identifiers import (
    BUILT_IN_TYPES,
    BlockedIdentifier,
    IdentifierType,
    InvalidIdentifier,
    custom_type,
    normalize,
)
from identity.selectors import identifier_holders, openid_appids
from identity.services import normalization_policy
from members import tasks
from members.locks import member_refresh_locks, memberships_lock
from members.models import DirtyMark, Member
from members.segments.models import MemberTag, Segment, SegmentMember, Tag, TagChange
from members.segments.rules import (
    All,
    Any_,
    Condition,
    HasTag,
    InSegment,
    Not,
    RuleInvalid,
    rule_parse,
)
from members.segments.services import segment_static_set
from members.selectors import member_resolve

logger = logging.getLogger(__name__)

#: Advisory-lock key (two-key form) that serializes writes of tag and segment definitions.
DEFINITIONS_LOCK = (0x4446, 0)
#: How many unmatched or invalid lines of a static list an answer shows.
PROBLEMS_SHOWN = 20
#: Identifier values looked up per query when a static list is uploaded.
LOOKUP_BATCH = 5_000
#: A CSV line longer than this is refused (a file without line breaks is not a list).
MAX_LINE = 64 * 1024
#: Tag keys that would clash with the API's paths (/members/{id}/tags/history/).
RESERVED_TAG_KEYS = frozenset({"history"})
#: The type column of a static list that names members by id rather than an identifier.
MEMBER_ID = "member_id"

_KEY = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # as rules name tags and segments

Node = tuple[Literal["tag", "segment"], str]


class DefinitionRefused(Exception):
    """A definition write that cannot be done: ``message`` for people, ``errors`` as (field,
    reason) pairs (a rule's problems as ``rule.<path>``), ``status`` the HTTP status it maps
    to (400 bad input, 404 unknown, 409 not allowed in the current state)."""

    def __init__(self, message: str, errors: Sequence[tuple[str, str]] = (), *, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.errors, self.status = message, list(errors), status


_UNCHANGED: Any = object()


# --- segments ---------------------------------------------------------------------------------


@transaction.atomic
def segment_create(*, key: str, name: str, kind: str, rule: object = None, description: str = "") -> Segment:
    """A new segment: dynamic (its rule is recomputed in full after the commit) or static (an
    empty list, filled with ``segment_members_set`` or ``segment_members_upload``)."""
    _definitions_lock()
    _key_check(key, "segment")
    if kind not in Segment.Kind.values:
        raise DefinitionRefused("Unknown kind.", [("kind", f"one of {', '.join(Segment.Kind.values)}")])
    if kind == Segment.Kind.DYNAMIC:
        _rule_check(("segment", key), rule)
    elif rule is not None:
        raise DefinitionRefused(
            "A static segment has no rule.", [("rule", "a static segment is a list; no rule")]
        )
    segment = _created(Segment, "segment", key=key, name=name, kind=kind, rule=rule, description=description)
    if kind == Segment.Kind.DYNAMIC:
        _recompute_after_commit("segment", segment.pk)
    return segment


@transaction.atomic
def segment_update(
    *, segment: Segment, name: str | None = None, description: str | None = None, rule: object = _UNCHANGED
) -> Segment:
    """Change a segment's name, description or (dynamic) rule; a changed rule is recomputed in
    full after the commit. Built-in segments are refused: copy them."""
    _definitions_lock()
    segment = _locked(Segment, segment.pk, "segment", segment.key)
    if segment.built_in:
        raise _built_in(segment)
    fields = ["updated_at"]
    if name is not None:
        segment.name = name
        fields.append("name")
    if description is not None:
        segment.description = description
        fields.append("description")
    rule_changed = rule is not _UNCHANGED and rule != segment.rule
    if rule is not _UNCHANGED and segment.kind == Segment.Kind.STATIC and rule is not None:
        raise DefinitionRefused(
            "A static segment has no rule.", [("rule", "a static segment is a list; no rule")]
        )
    if rule_changed:
        _rule_check(("segment", segment.key), rule)
        segment.rule = rule
        fields.append("rule")
    segment.save(update_fields=fields)
    if rule_changed:
        _recompute_after_commit("segment", segment.pk)
    return segment


@transaction.atomic
def segment_delete(*, segment: Segment) -> None:
    """Delete a segment with its members and history. Refused for a built-in segment, and for
    a segment that a tag's or another segment's rule reads (naming them)."""
    _definitions_lock()
    segment = _locked(Segment, segment.pk, "segment", segment.key)
    if segment.built_in:
        raise _built_in(segment)
    _unread_check(("segment", segment.key))
    # Waits for refreshes evaluating it to commit, so none writes to a segment that is gone.
    memberships_lock(tag_ids=[], segment_ids=[segment.pk], exclusive=True)
    segment.delete()


@transaction.atomic
def segment_copy(*, segment: Segment, key: str, name: str | None = None) -> Segment:
    """An editable copy of a segment (built-in or not) under a new key: the same rule,
    recomputed after the commit, or the same list."""
    _definitions_lock()
    _key_check(key, "segment")
    copy = _created(
        Segment, "segment", key=key, name=name or f"{segment.name[:193]} (copy)", kind=segment.kind,
        rule=segment.rule, description=segment.description, built_in=False,
    )  # fmt: skip
    if copy.kind == Segment.Kind.DYNAMIC:
        _recompute_after_commit("segment", copy.pk)
    else:
        members = SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True)
        segment_static_set(segment=copy, member_ids=list(members))
    return copy


@dataclass(frozen=True, slots=True)
class ListProblem:
    """A line of a static list that found no member: ``line`` counts from 1 (a CSV's header
    is line 1; in a list of ids, the id's position)."""

    line: int
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class StaticListOutcome:
    segment: Segment
    rows: int
    matched: int
    unmatched: int
    invalid: int
    problems: tuple[ListProblem, ...]


@transaction.atomic
def segment_members_set(*, segment: Segment, member_ids: Sequence[int]) -> StaticListOutcome:
    """A static segment's members become exactly these ids (an id absorbed by a merge counts as
    its survivor); unknown ids are reported, not kept."""
    segment = _static_locked(segment)
    known = set(Member.objects.filter(pk__in=set(member_ids)).values_list("pk", flat=True))
    problems = [
        ListProblem(position, str(member_id), "no such member")
        for position, member_id in enumerate(member_ids, start=1)
        if member_id not in known
    ]
    segment = segment_static_set(segment=segment, member_ids=known)
    return StaticListOutcome(
        segment=segment,
        rows=len(member_ids),
        matched=len(member_ids) - len(problems),
        unmatched=len(problems),
        invalid=0,
        problems=tuple(problems[:PROBLEMS_SHOWN]),
    )


@transaction.atomic
def segment_members_upload(*, segment: Segment, chunks: Iterable[bytes]) -> StaticListOutcome:
    """A static segment's members become the members a CSV names, read as it streams in.

    The file is UTF-8 with a header: ``type,value`` (each row names its identifier type), or
    one column headed by the type (``phone``, ``email``, ``member_card``, any custom type, or
    ``member_id``). Values are normalized as at ingestion (any written form of a phone) and
    looked up ``LOOKUP_BATCH`` at a time. Rows that find nobody or are not valid are counted
    and the first few reported; a file whose every row is invalid is refused, the list kept.
    """
    segment = _static_locked(segment)
    upload = _Upload()
    reader = csv.reader(_text_lines(chunks))
    try:
        upload.read(reader)
    except csv.Error as error:
        raise DefinitionRefused(
            "The file is not a CSV we can read.", [("file", f"line {reader.line_num}: {error}")]
        ) from error
    if upload.rows and upload.invalid == upload.rows:
        raise DefinitionRefused(
            "No line of the file is valid; the list was left as it was.",
            [("file", f"line {p.line}: {p.reason}") for p in upload.problems],
        )
    segment = segment_static_set(segment=segment, member_ids=upload.found)
    return StaticListOutcome(
        segment=segment,
        rows=upload.rows,
        matched=upload.matched,
        unmatched=upload.unmatched,
        invalid=upload.invalid,
        problems=tuple(upload.problems),
    )


class _Upload:
    """The reading of one static list: rows counted, members found, the first problems."""

    def __init__(self) -> None:
        self.policy = normalization_policy()
        self.one_type: str | None = None  # None: type,value rows
        self.rows = self.matched = self.unmatched = self.invalid = 0
        self.problems: list[ListProblem] = []
        self.batch_problems: list[ListProblem] = []  # the batch's, in line order once looked up
        self.found: set[int] = set()

    def read(self, reader: Any) -> None:
        self.header(reader)
        batch: list[tuple[int, str, str]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            self.rows += 1
            parsed = self.row(row, reader.line_num)
            if parsed is not None:
                batch.append(parsed)
            if len(batch) >= LOOKUP_BATCH:
                self.lookup(batch)
                batch = []
        self.lookup(batch)

    def problem(self, line: int, value: str, reason: str, *, invalid: bool) -> None:
        if invalid:
            self.invalid += 1
        else:
            self.unmatched += 1
        if len(self.problems) < PROBLEMS_SHOWN:
            self.batch_problems.append(ListProblem(line, value[:100], reason))

    def header(self, reader: Any) -> None:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if [cell.casefold() for cell in cells] == ["type", "value"]:
                return
            if len(cells) == 1 and (type_ := _list_type(cells[0])) is not None:
                self.one_type = type_
                return
            raise DefinitionRefused(
                "The file needs a header.",
                [("file", f"line {reader.line_num}: expected the header type,value, or one column named by "
                          f"the identifier type (phone, email, member_card, ..., or {MEMBER_ID}); "
                          f"got {','.join(cells)[:100]!r}")],
            )  # fmt: skip
        raise DefinitionRefused("The file is empty.", [("file", "expected a header line")])

    def row(self, row: list[str], line: int) -> tuple[int, str, str] | None:
        """(line, type, normalized value) of a data row, or None (counted as invalid)."""
        expected = 1 if self.one_type is not None else 2
        cells = [cell.strip() for cell in row]
        while len(cells) > expected and not cells[-1]:  # trailing empty cells a spreadsheet adds
            cells.pop()
        if len(cells) != expected:
            self.problem(
                line, ",".join(cells), f"expected {expected} column(s), got {len(cells)}", invalid=True
            )
            return None
        raw = cells[-1]
        type_ = self.one_type or _list_type(cells[0])
        if type_ is None:
            self.problem(line, cells[0], "not an identifier type", invalid=True)
            return None
        if type_ == MEMBER_ID:
            if not raw.isdigit() or int(raw) >= 2**63:
                self.problem(line, raw, "a member id is a whole number", invalid=True)
                return None
            return line, type_, str(int(raw))
        try:
            return line, type_, normalize(type_, raw, self.policy)
        except (InvalidIdentifier, BlockedIdentifier) as error:
            self.problem(line, raw, f"not a valid {type_.replace('_', ' ')}: {error}", invalid=True)
            return None

    def lookup(self, batch: list[tuple[int, str, str]]) -> None:
        """Find the members the batch's rows name (a query per identifier type in it)."""
        self.find(batch)
        room = PROBLEMS_SHOWN - len(self.problems)
        self.problems += sorted(self.batch_problems, key=lambda p: p.line)[:room]
        self.batch_problems = []

    def find(self, batch: list[tuple[int, str, str]]) -> None:
        if not batch:
            return
        appids = openid_appids() if any(t == IdentifierType.WECHAT_OPENID for _, t, _ in batch) else []
        wanted: dict[str, set[str]] = {}
        for _, type_, value in batch:
            wanted.setdefault(type_, set()).update(_stored_forms(type_, value, appids))
        holders: dict[tuple[str, str], set[int]] = {}
        for type_, values in wanted.items():
            if type_ == MEMBER_ID:
                known = Member.objects.filter(pk__in=[int(v) for v in values]).values_list("pk", flat=True)
                holders.update({(type_, str(pk)): {pk} for pk in known})
            else:
                held = identifier_holders(type_=type_, values=values)
                holders.update({(type_, value): members for value, members in held.items()})
        for line, type_, value in batch:
            members = set().union(
                *(holders.get((type_, f), set()) for f in _stored_forms(type_, value, appids))
            )
            if members:
                self.matched += 1
                self.found |= members
            else:
                self.problem(line, value, f"no member holds this {type_.replace('_', ' ')}", invalid=False)


def _text_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of UTF-8 bytes arriving in chunks, each with its line break (as ``csv``
    wants them), without holding the whole file."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    line = 0
    try:
        for chunk in chunks:
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for text in lines:
                line += 1
                yield text + "\n"
            if len(pending) > MAX_LINE:
                raise DefinitionRefused(
                    "A line of the file is too long.",
                    [("file", f"line {line + 1}: longer than {MAX_LINE} characters")],
                )
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        at = line + 1 + error.object[: error.start].count(b"\n")
        raise DefinitionRefused(
            "The file is not UTF-8 text.", [("file", f"line {at}: not UTF-8 (save the CSV as UTF-8)")]
        ) from error
    if pending:
        yield pending


def _list_type(raw: str) -> str | None:
    name = raw.strip().casefold()
    if name == MEMBER_ID or name in BUILT_IN_TYPES:
        return name
    return custom_type(name)


def _stored_forms(type_: str, value: str, appids: list[str]) -> list[str]:
    """The stored values an identifier may have: an openid is scoped by its mini-program
    (``<appid>:<openid>``), so a bare one is looked for under every appid."""
    if type_ != IdentifierType.WECHAT_OPENID or ":" in value:
        return [value]
    return [value, *(f"{appid}:{value}" for appid in appids)]


def _static_locked(segment: Segment) -> Segment:
    """The segment re-read under its row lock (two uploads at once would otherwise merge their
    lists), refused unless it is a static list staff may change."""
    segment = _locked(Segment, segment.pk, "segment", segment.key)
    if segment.built_in:
        raise _built_in(segment)
    if segment.kind != Segment.Kind.STATIC:
        raise DefinitionRefused(
            f"Segment {segment.key!r} is dynamic: its members come from its rule.",
            [("kind", "only a static segment takes a list of members")],
            status=409,
        )
    return segment


# --- tags -------------------------------------------------------------------------------------


@transaction.atomic
def tag_create(*, key: str, name: str, kind: str, rule: object = None, description: str = "") -> Tag:
    """A new manual tag (staff add and remove it) or rule tag (recomputed in full after the
    commit). Computed tags are the platform's."""
    _definitions_lock()
    _key_check(key, "tag")
    if kind == Tag.Kind.RULE:
        _rule_check(("tag", key), rule)
    elif kind == Tag.Kind.MANUAL:
        if rule is not None:
            raise DefinitionRefused(
                "A manual tag has no rule.", [("rule", "staff add and remove a manual tag; no rule")]
            )
    else:
        raise DefinitionRefused(
            "Unknown kind.", [("kind", "manual or rule (computed tags belong to the platform)")]
        )
    tag = _created(Tag, "tag", key=key, name=name, kind=kind, rule=rule, description=description)
    if kind == Tag.Kind.RULE:
        _recompute_after_commit("tag", tag.pk)
    return tag


@transaction.atomic
def tag_update(
    *, tag: Tag, name: str | None = None, description: str | None = None, rule: object = _UNCHANGED
) -> Tag:
    """Change a tag's name, description or (rule tag) rule; a changed rule is recomputed in
    full after the commit. Computed tags are refused."""
    _definitions_lock()
    tag = _locked(Tag, tag.pk, "tag", tag.key)
    if tag.kind == Tag.Kind.COMPUTED:
        raise _computed(tag)
    fields = ["updated_at"]
    if name is not None:
        tag.name = name
        fields.append("name")
    if description is not None:
        tag.description = description
        fields.append("description")
    if rule is not _UNCHANGED and tag.kind == Tag.Kind.MANUAL and rule is not None:
        raise DefinitionRefused(
            "A manual tag has no rule.", [("rule", "staff add and remove a manual tag; no rule")]
        )
    rule_changed = rule is not _UNCHANGED and rule != tag.rule
    if rule_changed:
        _rule_check(("tag", tag.key), rule)
        tag.rule = rule
        fields.append("rule")
    tag.save(update_fields=fields)
    if rule_changed:
        _recompute_after_commit("tag", tag.pk)
    return tag


@transaction.atomic
def tag_delete(*, tag: Tag) -> None:
    """Delete a manual or rule tag from every member, with its change log. Refused for a
    computed tag and for a tag that a rule reads (naming them)."""
    _definitions_lock()
    tag = _locked(Tag, tag.pk, "tag", tag.key)
    if tag.kind == Tag.Kind.COMPUTED:
        raise _computed(tag)
    _unread_check(("tag", tag.key))
    memberships_lock(tag_ids=[tag.pk], segment_ids=[], exclusive=True)
    tag.delete()


# --- manual tags on members -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManualTagOutcome:
    member_id: int  # the member it acted on (the survivor, for an id absorbed by a merge)
    changed: bool  # False: the member already had it (add) or did not have it (remove)


@transaction.atomic
def member_tag_add(*, member_id: int, tag: Tag, by: AbstractBaseUser) -> ManualTagOutcome:
    """Put a manual tag on a member, recorded with who did it. Idempotent: a member who has
    it already keeps it, and nothing is recorded."""
    member = _member_locked(member_id)
    _manual_check(tag)
    _, created = MemberTag.objects.get_or_create(member=member, tag=tag, defaults={"added_by": by})
    if created:
        TagChange.objects.create(member=member, tag=tag, action=TagChange.Action.ADDED, by=by)
        _refresh_after_commit(member.pk)
    return ManualTagOutcome(member.pk, created)


@transaction.atomic
def member_tag_remove(*, member_id: int, tag: Tag, by: AbstractBaseUser) -> ManualTagOutcome:
    """Take a manual tag off a member, recorded with who did it. Idempotent: removing a tag
    the member does not have records nothing."""
    member = _member_locked(member_id)
    _manual_check(tag)
    removed, _ = MemberTag.objects.filter(member=member, tag=tag).delete()
    if removed:
        TagChange.objects.create(member=member, tag=tag, action=TagChange.Action.REMOVED, by=by)
        _refresh_after_commit(member.pk)
    return ManualTagOutcome(member.pk, bool(removed))


def _member_locked(member_id: int) -> Member:
    """The active member behind an id, under the member lock the refresh takes too (it moves
    manual tags to the survivor of a merge), re-read once locked in case a merge retired it
    meanwhile."""
    member = member_resolve(member_id=member_id)
    if member is None:
        raise DefinitionRefused(f"No member {member_id}.", status=404)
    member_refresh_locks({member.pk})
    current = member_resolve(member_id=member.pk)
    if current is not None and current.pk != member.pk:
        member_refresh_locks({current.pk})
        member = current
    return member


def _manual_check(tag: Tag) -> None:
    if tag.kind != Tag.Kind.MANUAL:
        raise DefinitionRefused(
            f"Tag {tag.key!r} is a {tag.kind} tag: members gain and lose it by its rule, not by hand.",
            [("tag", "only manual tags are added and removed by staff")],
            status=409,
        )


def _refresh_after_commit(member_id: int) -> None:
    """Mark the member for a refresh: rule tags and segments may read the manual tag."""
    DirtyMark.objects.create(member_id=member_id)
    transaction.on_commit(process_pending_enqueue)


# --- shared checks ----------------------------------------------------------------------------


def _definitions_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(DEFINITIONS_LOCK))


def _key_check(key: object, what: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise DefinitionRefused(f"Bad {what} key.", [("key", "1 to 64 letters, digits, - and _")])
    if what == "tag" and key in RESERVED_TAG_KEYS:
        raise DefinitionRefused(f"The tag key {key!r} is reserved.", [("key", "reserved: pick another key")])


def _created(model: type[Segment] | type[Tag], what: str, **fields: object) -> Any:
    if model.objects.filter(key=fields["key"]).exists():
        raise _taken(what, str(fields["key"]))
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError as error:  # created by a writer that does not take the lock
        raise _taken(what, str(fields["key"])) from error


def _taken(what: str, key: str) -> DefinitionRefused:
    return DefinitionRefused(f"A {what} {key!r} exists already.", [("key", "already taken")], status=409)


def _locked(model: type[Segment] | type[Tag], pk: int, what: str, key: str) -> Any:
    found = model.objects.select_for_update().filter(pk=pk).first()
    if found is None:
        raise DefinitionRefused(f"No {what} {key!r}.", status=404)
    return found


def _built_in(segment: Segment) -> DefinitionRefused:
    return DefinitionRefused(
        f"Segment {segment.key!r} is built in: copy it to change it.",
        [("key", "a built-in segment cannot be changed or deleted; copy it")],
        status=409,
    )


def _computed(tag: Tag) -> DefinitionRefused:
    return DefinitionRefused(
        f"Tag {tag.key!r} is computed by the platform and cannot be changed or deleted.",
        [("key", "a computed tag is read-only")],
        status=409,
    )


def _rule_of(rule: object) -> frozenset[Node]:
    """What a stored rule reads (nothing if it no longer parses: it decides nothing)."""
    try:
        return frozenset((k, key) for k, key, _ in _references(rule_parse(rule)))
    except RuleInvalid:
        return frozenset()


def _graph() -> tuple[dict[Node, frozenset[Node]], set[Node]]:
    """What every rule tag and dynamic segment reads, and every tag and segment there is (two
    queries: definitions are few)."""
    reads: dict[Node, frozenset[Node]] = {}
    exists: set[Node] = set()
    for key, kind, rule in Tag.objects.values_list("key", "kind", "rule"):
        exists.add(("tag", key))
        if kind == Tag.Kind.RULE:
            reads[("tag", key)] = _rule_of(rule)
    for key, kind, rule in Segment.objects.values_list("key", "kind", "rule"):
        exists.add(("segment", key))
        if kind == Segment.Kind.DYNAMIC:
            reads[("segment", key)] = _rule_of(rule)
    return reads, exists


def _references(condition: Condition, path: str = "") -> Iterator[tuple[Literal["tag", "segment"], str, str]]:
    """(kind, key, path) of every tag and segment a rule reads, paths as ``rule_parse`` gives
    them."""
    if isinstance(condition, All | Any_):
        group = _join(path, "all" if isinstance(condition, All) else "any")
        for index, item in enumerate(condition.items):
            yield from _references(item, f"{group}[{index}]")
    elif isinstance(condition, Not):
        yield from _references(condition.item, _join(path, "not"))
    elif isinstance(condition, HasTag):
        yield "tag", condition.key, _join(path, "tag")
    elif isinstance(condition, InSegment):
        yield "segment", condition.key, _join(path, "segment")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _field(path: str) -> str:
    return _join("rule", path) if path else "rule"


def _rule_check(node: Node, rule: object) -> None:
    """Refuse a rule that is not valid (every error by path), reads a tag or segment that does
    not exist, or leads back to ``node`` through what it reads."""
    if rule is None:
        raise DefinitionRefused("A rule is required.", [("rule", "is required")])
    try:
        condition = rule_parse(rule)
    except RuleInvalid as error:
        raise DefinitionRefused(
            "The rule is not valid.", [(_field(path), reason) for path, reason in error.errors]
        ) from error
    reads, exists = _graph()
    references = list(_references(condition))
    reads[node] = frozenset((kind, key) for kind, key, _ in references)
    errors = []
    for kind, key, path in references:
        if (kind, key) not in exists and (kind, key) != node:
            errors.append((_field(path), f"no {kind} {key!r}"))
            continue
        cycle = _path_back(reads, (kind, key), node)
        if cycle is not None:
            chain = " → ".join(f"{k} {name!r}" for k, name in [node, *cycle])
            errors.append((_field(path), f"reads back the {node[0]} itself: {chain}"))
    if errors:
        raise DefinitionRefused("The rule reads what does not exist or what reads it back.", errors)


def _path_back(reads: dict[Node, frozenset[Node]], start: Node, target: Node) -> list[Node] | None:
    """The nodes from ``start`` to ``target`` following what rules read, or None."""
    came_from: dict[Node, Node | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == target:
            path: list[Node] = []
            at: Node | None = node
            while at is not None:
                path.append(at)
                at = came_from[at]
            return path[::-1]
        for nxt in sorted(reads.get(node, ())):
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return None


def _unread_check(node: Node) -> None:
    """Refuse to delete what a rule reads, naming the readers."""
    reads, _ = _graph()
    readers = sorted(reader for reader, read in reads.items() if node in read and reader != node)
    if readers:
        names = ", ".join(f"{kind} {key!r}" for kind, key in readers)
        raise DefinitionRefused(
            f"The {node[0]} {node[1]!r} is read by {names}: change or delete those first.",
            [("key", f"read by {names}")],
            status=409,
        )


def _recompute_after_commit(kind: Literal["tag", "segment"], pk: int) -> None:
    """Recompute the rule in full once the edit is committed. A lost message is not lost
    work: the nightly full recompute computes every rule."""

    def send() -> None:
        task = tasks.segment_recompute if kind == "segment" else tasks.tag_recompute
        try:
            task.apply_async((pk,), retry=False)
        except (OperationalError, RedisError, OSError, CeleryError) as error:
            logger.warning(
                "Could not enqueue the recompute of %s %s (the nightly run will): %s", kind, pk, error
            )

    transaction.on_commit(send)
