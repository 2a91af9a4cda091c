"""A static segment's members: set from member ids, or from a CSV upload of identifiers of any
type, normalized as at ingestion and looked up a batch at a time; lines that find nobody are
counted and the first few reported."""

import codecs
import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

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
from members.models import Member
from members.segments.definitions.writes import DefinitionRefused, built_in_refused, definition_locked
from members.segments.models import Segment
from members.segments.services import segment_static_set

#: How many unmatched or invalid lines of a static list an answer shows.
PROBLEMS_SHOWN = 20
#: Identifier values looked up per query when a static list is uploaded.
LOOKUP_BATCH = 5_000
#: A CSV line longer than this is refused (a file without line breaks is not a list).
MAX_LINE = 64 * 1024
#: The type column of a static list that names members by id rather than an identifier.
MEMBER_ID = "member_id"


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
    segment = definition_locked(Segment, segment.pk, "segment", segment.key)
    if segment.built_in:
        raise built_in_refused(segment)
    if segment.kind != Segment.Kind.STATIC:
        raise DefinitionRefused(
            f"Segment {segment.key!r} is dynamic: its members come from its rule.",
            [("kind", "only a static segment takes a list of members")],
            status=409,
        )
    return segment
