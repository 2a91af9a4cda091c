"""Writes of segments: full recompute of a dynamic segment in one set-based statement, static
lists, and the entered/exited history they leave.

A full recompute runs the segment's rule as one query over all members (``compile.rule_sql``)
and, in the same statement, removes who left, adds who entered and appends both to the
segment's history (the changes feed). Segments that read other segments are computed after
them (``segments_compute_all``). A compute that fails keeps the last membership and records
why on the segment.
"""

import time
from collections.abc import Iterable
from datetime import datetime

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from members.segments.compile import rule_sql
from members.segments.models import Segment, SegmentMember
from members.segments.rules import RuleInvalid, rule_parse, rule_references

_MEMBERSHIP_DIFF = """
WITH wanted AS ({wanted}),
gone AS (
    DELETE FROM members_segmentmember AS s
    WHERE s.segment_id = %s AND NOT EXISTS (SELECT 1 FROM wanted AS w WHERE w.id = s.member_id)
    RETURNING s.member_id
),
came AS (
    INSERT INTO members_segmentmember (segment_id, member_id, entered_at)
    SELECT %s, w.id, %s FROM wanted AS w
    ON CONFLICT (segment_id, member_id) DO NOTHING
    RETURNING member_id
)
INSERT INTO members_segmentchange (segment_id, member_id, change, at)
SELECT %s, member_id, 'exited', %s FROM gone
UNION ALL
SELECT %s, member_id, 'entered', %s FROM came
"""


def _membership_write(segment: Segment, wanted_sql: str, wanted_params: list, now: datetime) -> int:
    """Make the segment's members exactly ``wanted_sql``'s ids; returns how many changed."""
    with connection.cursor() as cursor:
        cursor.execute(
            _MEMBERSHIP_DIFF.format(wanted=wanted_sql),
            [*wanted_params, segment.pk, segment.pk, now, segment.pk, now, segment.pk, now],
        )
        return cursor.rowcount


def segment_compute(*, segment: Segment, now: datetime | None = None) -> Segment:
    """Recompute a dynamic segment from its rule over all members, recording its size, when
    and how long; a failure is recorded on the segment and the membership left as it was."""
    if segment.kind != Segment.Kind.DYNAMIC:
        return segment
    now = now or timezone.now()
    began = time.monotonic()
    try:
        with transaction.atomic():
            condition = rule_parse(segment.rule)
            sql, params = rule_sql(condition, now=now, all_members=True)
            _membership_write(
                segment,
                f"SELECT m.id FROM members_member AS m WHERE m.status = 'active' AND ({sql})",  # noqa: S608
                params,
                now,
            )
    except (RuleInvalid, DatabaseError) as error:
        segment.error = str(error)[:2000]
        segment.save(update_fields=["error", "updated_at"])
        return segment
    segment.size = _size(segment)
    segment.computed_at = now
    segment.compute_ms = round((time.monotonic() - began) * 1000)
    segment.error = ""
    segment.save(update_fields=["size", "computed_at", "compute_ms", "error", "updated_at"])
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


def segments_compute_all(*, now: datetime | None = None) -> list[Segment]:
    """Recompute every dynamic segment, each after the segments its rule reads (the nightly
    full recompute). A segment in a reference cycle is recorded as failed, not computed."""
    now = now or timezone.now()
    segments = {s.key: s for s in Segment.objects.filter(kind=Segment.Kind.DYNAMIC)}
    reads: dict[str, frozenset[str]] = {}
    for key, segment in segments.items():
        try:
            reads[key] = rule_references(rule_parse(segment.rule)).segments & segments.keys()
        except RuleInvalid:
            reads[key] = frozenset()  # segment_compute records why
    done: list[Segment] = []
    computed: set[str] = set()
    while len(computed) < len(segments):
        ready = sorted(k for k in segments if k not in computed and reads[k] <= computed)
        if not ready:
            for key in sorted(segments.keys() - computed):
                segment = segments[key]
                segment.error = f"its rule reads segments that read it back: {', '.join(sorted(reads[key]))}"
                segment.save(update_fields=["error", "updated_at"])
                done.append(segment)
            break
        for key in ready:
            done.append(segment_compute(segment=segments[key], now=now))
            computed.add(key)
    return done
