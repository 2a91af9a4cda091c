"""Writes of tags and segments: the full recompute of a rule tag or a dynamic segment in one
set-based statement, static lists, the nightly recompute of everything, and the scheduled
recheck of members whose time windows expire. (The incremental path, a refreshed member at
a time, is ``members.segments.evaluate``.)

A full recompute runs the rule as one query over all members (``compile.rule_sql``) and, in
the same statement, removes who left, adds who entered and appends both to the history (tag
changes; the segment's changes feed). Definitions that read others are computed after them
(``memberships_compute_all``). A compute that fails keeps the last membership and, for a
segment, records why on it.
"""

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from cdp.db import binary_parameters_cursor
from cdp.metrics import SEGMENT_COMPUTE_ERRORS, SEGMENT_COMPUTE_SECONDS
from identity.models import EventResolution
from members.locks import full_compute_memory, memberships_lock
from members.marks import members_mark_dirty
from members.models import MemberAggregate
from members.segments.builtins import computed_tags_compute_all, rfm_cutoffs_compute
from members.segments.compile import Counted, counts_sql, rule_counts, rule_sql
from members.segments.models import RfmCutoffs, Segment, SegmentMember, SegmentsRecheck, Tag
from members.segments.rules.analysis import rule_references
from members.segments.rules.parse import RuleInvalid, rule_parse
from members.segments.selectors import Definitions, definitions_load
from members.segments.webhooks.services import webhooks_nudge

logger = logging.getLogger(__name__)


def _full_diff_sql(
    *, members: str, changes: str, target: str, since: str, verb: str, gone: str, came: str
) -> str:
    """Make one target's (``target`` = %s) members exactly those of a ``{wanted}`` query of
    ids, appending who left and who came to ``changes``. Only the new members are inserted
    (an anti-join: re-inserting a million present ones, each a conflict, cost more than the
    rule itself)."""
    return f"""
WITH wanted AS ({{wanted}}),
gone AS (
    DELETE FROM {members} AS x
    WHERE x.{target} = %s AND NOT EXISTS (SELECT 1 FROM wanted AS w WHERE w.id = x.member_id)
    RETURNING x.member_id
),
came AS (
    INSERT INTO {members} ({target}, member_id, {since})
    SELECT %s, w.id, %s FROM wanted AS w
    WHERE NOT EXISTS (SELECT 1 FROM {members} AS x WHERE x.{target} = %s AND x.member_id = w.id)
    ON CONFLICT DO NOTHING
    RETURNING member_id
)
INSERT INTO {changes} ({target}, member_id, {verb}, at)
SELECT %s, member_id, '{gone}', %s FROM gone
UNION ALL
SELECT %s, member_id, '{came}', %s FROM came
"""  # noqa: S608 - names of the models' tables and columns


_MEMBERSHIP_DIFF = _full_diff_sql(members="members_segmentmember", changes="members_segmentchange",
                                  target="segment_id", since="entered_at", verb="change", gone="exited",
                                  came="entered")  # fmt: skip
_TAG_DIFF = _full_diff_sql(members="members_membertag", changes="members_tagchange", target="tag_id",
                           since="added_at", verb="action", gone="removed", came="added")  # fmt: skip
_ACTIVE_MATCHING = "SELECT m.id FROM members_member AS m WHERE m.status = 'active' AND ({sql})"


def _membership_write(segment: Segment, wanted_sql: str, wanted_params: list, now: datetime) -> int:
    """Make the segment's members exactly ``wanted_sql``'s ids; returns how many changed.
    Holds the segment against the incremental path first, so its statement sees every
    refresh that wrote the segment committed."""
    memberships_lock(tag_ids=[], segment_ids=[segment.pk], exclusive=True)
    full_compute_memory()
    with connection.cursor() as cursor:
        cursor.execute(
            _MEMBERSHIP_DIFF.format(wanted=wanted_sql),
            [*wanted_params, segment.pk, segment.pk, now, segment.pk, segment.pk, now, segment.pk, now],
        )
        changed = cursor.rowcount
    if changed:
        webhooks_nudge([segment.pk])
    return changed


def segment_compute(
    *, segment: Segment, now: datetime | None = None, counts: Mapping[Counted, str] | None = None
) -> Segment:
    """Recompute a dynamic segment from its rule over all members, recording its size, when
    and how long; a failure is recorded on the segment and the membership left as it was.
    ``counts``: the behaviour counts already gathered in ``COUNTS_TABLE`` (a full run's)."""
    if segment.kind != Segment.Kind.DYNAMIC:
        return segment
    now = now or timezone.now()
    began = time.monotonic()
    try:
        with transaction.atomic(), SEGMENT_COMPUTE_SECONDS.labels("segment").time():
            condition = rule_parse(segment.rule)
            sql, params = rule_sql(
                condition, now=now, all_members=True, counts=counts, counts_table=COUNTS_TABLE
            )
            _membership_write(segment, _ACTIVE_MATCHING.format(sql=sql), params, now)
            segment.size = _size(segment)
            segment.computed_at = now
            segment.compute_ms = round((time.monotonic() - began) * 1000)
            segment.error = ""
            segment.save(update_fields=["size", "computed_at", "compute_ms", "error", "updated_at"])
    except (RuleInvalid, DatabaseError) as error:
        SEGMENT_COMPUTE_ERRORS.labels("segment").inc()
        segment.error = str(error)[:2000]
        segment.save(update_fields=["error", "updated_at"])
    return segment


def segment_static_set(
    *, segment: Segment, member_ids: Iterable[int], now: datetime | None = None
) -> Segment:
    """A static segment's members become exactly these (ids absorbed by a merge count as their
    survivor; unknown ids are ignored)."""
    now = now or timezone.now()
    with transaction.atomic():
        _membership_write(
            segment,
            "SELECT DISTINCT COALESCE(m.merged_into_id, m.id) AS id FROM members_member AS m "
            "JOIN unnest(%s::bigint[]) AS given(id) ON given.id = m.id",
            [sorted(set(member_ids))],
            now,
        )
        segment.size = _size(segment)
        segment.computed_at = now
        segment.error = ""
        segment.save(update_fields=["size", "computed_at", "error", "updated_at"])
    return segment


def _size(segment: Segment) -> int:
    return SegmentMember.objects.filter(segment=segment).count()


def tag_compute(*, tag: Tag, now: datetime | None = None, counts: Mapping[Counted, str] | None = None) -> int:
    """Recompute a rule tag over all members; returns how many members gained or lost it
    (each recorded as a tag change). A rule that cannot run leaves the tag as it was and
    raises (``RuleInvalid``, a database error)."""
    if tag.kind != Tag.Kind.RULE:
        return 0
    now = now or timezone.now()
    sql, params = rule_sql(
        rule_parse(tag.rule), now=now, all_members=True, counts=counts, counts_table=COUNTS_TABLE
    )
    with transaction.atomic():
        memberships_lock(tag_ids=[tag.pk], segment_ids=[], exclusive=True)
        full_compute_memory()
        with connection.cursor() as cursor:
            cursor.execute(
                _TAG_DIFF.format(wanted=_ACTIVE_MATCHING.format(sql=sql)),
                [*params, tag.pk, tag.pk, now, tag.pk, tag.pk, now, tag.pk, now],
            )
            return cursor.rowcount


def memberships_compute_all(*, now: datetime | None = None, rfm_cutoffs: bool = True) -> list[Segment]:
    """Recompute every tag and segment from scratch (nightly): the RFM cutoffs (unless
    ``rfm_cutoffs`` is false: score against the last ones) and computed tags, then every
    rule tag and dynamic segment, each after those its rule reads. A rule that cannot be
    parsed, or that reads what reads it back, is recorded on its segment (a tag's is
    logged). Returns the segments."""
    now = now or timezone.now()
    if rfm_cutoffs:
        rfm_cutoffs_compute(now=now)
    computed_tags_compute_all(now=now)
    return _definitions_compute(definitions_load(), now=now)


def definition_recompute(*, kind: str, pk: int, now: datetime | None = None) -> list[Segment]:
    """Recompute a rule tag or dynamic segment after its rule was created or edited, and then
    every tag and segment that reads it, directly or not. Returns the segments computed."""
    definitions = definitions_load()
    stale = {(kind, definitions.tag_keys.get(pk) if kind == "tag" else definitions.segment_keys.get(pk))}
    affected = []
    for definition in definitions.ordered:
        refs = rule_references(definition.condition)
        reads = {("tag", key) for key in refs.tags} | {("segment", key) for key in refs.segments}
        if (definition.kind, definition.key) in stale or reads & stale:
            stale.add((definition.kind, definition.key))
            affected.append(definition)
    only = dataclasses.replace(
        definitions,
        ordered=tuple(affected),
        broken={k: v for k, v in definitions.broken.items() if k == (kind, pk)},
    )
    return _definitions_compute(only, now=now or timezone.now())


#: A full run's behaviour counts (a temporary table: this connection's, dropped after the run).
COUNTS_TABLE = "segments_behaviour_counts"
#: How long before a full run a resolution may have started and still commit after its counts
#: were gathered (transactions of the pipeline last seconds).
_COUNTS_MARGIN = timedelta(minutes=2)


def _definitions_compute(definitions: Definitions, *, now: datetime) -> list[Segment]:
    segments = Segment.objects.in_bulk([d.id for d in definitions.ordered if d.kind == "segment"])
    tags = Tag.objects.in_bulk([d.id for d in definitions.ordered if d.kind == "tag"])
    done: list[Segment] = []
    started = timezone.now()
    counts = _counts_gather(definitions, now=now)
    try:
        for definition in definitions.ordered:
            if definition.kind == "segment":
                done.append(segment_compute(segment=segments[definition.id], now=now, counts=counts))
                continue
            try:
                with SEGMENT_COMPUTE_SECONDS.labels("tag").time():
                    tag_compute(tag=tags[definition.id], now=now, counts=counts)
            except DatabaseError:
                SEGMENT_COMPUTE_ERRORS.labels("tag").inc()
                # The tag keeps its members; the next run tries again.
                logger.exception("rule tag %s could not be computed", definition.key)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {COUNTS_TABLE}")
    if counts:
        _resolved_since_mark(started - _COUNTS_MARGIN)
    broken = {pk: reason for (kind, pk), reason in definitions.broken.items() if kind == "segment"}
    for segment in Segment.objects.filter(pk__in=broken):
        segment.error = broken[segment.pk][:2000]
        segment.save(update_fields=["error", "updated_at"])
        done.append(segment)
    return done


def _counts_gather(definitions: Definitions, *, now: datetime) -> dict[Counted, str]:
    """Every behaviour count the definitions read, per member, in one pass over the events
    (``compile.counts_sql``) instead of one pass per condition; returns which column holds
    which count."""
    counted = list(dict.fromkeys(c for d in definitions.ordered for c in rule_counts(d.condition, now=now)))
    if not counted:
        return {}
    began = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        full_compute_memory()
        cursor.execute(f"DROP TABLE IF EXISTS {COUNTS_TABLE}")
        cursor.execute(*counts_sql(counted, table=COUNTS_TABLE))
        cursor.execute(f"ANALYZE {COUNTS_TABLE}")
    logger.info("behaviour counts of %d conditions gathered in %d ms", len(counted),
                round((time.monotonic() - began) * 1000))  # fmt: skip
    return {c: f"c{i}" for i, c in enumerate(counted)}


def _resolved_since_mark(since: datetime) -> int:
    """Mark for a refresh the members whose events were resolved since ``since``: a full run
    read the events as they were when it gathered the counts, so a refresh that ran in
    between may have been overwritten with older counts; refreshing again puts it right."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT member_id FROM {EventResolution._meta.db_table} WHERE resolved_at >= %b",  # noqa: S608
            [since],
        )
        return members_mark_dirty(member_ids=[row[0] for row in cursor.fetchall()])


def rfm_first_compute(*, now: datetime | None = None) -> bool:
    """Until the first nightly run, a platform with buyers has no RFM quintiles: compute
    everything once as soon as there are buyers (the recheck calls this; a no-op after).
    Returns whether it ran."""
    if RfmCutoffs.objects.exists() or not MemberAggregate.objects.filter(orders__gt=0).exists():
        return False
    memberships_compute_all(now=now)
    return True


def memberships_recheck_due(*, now: datetime | None = None) -> int:
    """Mark for a refresh the members whose tags or segments may change with time alone by now
    (a window of a rule, a lifecycle stage); returns how many. Run by beat; the refresh
    evaluates them and moves their recheck moment on."""
    due = SegmentsRecheck.objects.filter(due_at__lte=now or timezone.now()).values_list(
        "member_id", flat=True
    )
    return members_mark_dirty(member_ids=due, unless_marked=True)
