"""Reads of segments: members by keyset, the changes feed."""

from datetime import datetime

from members.segments.models import Segment, SegmentChange, SegmentMember


def segment_members(*, segment: Segment, after: int, size: int) -> list[tuple[int, datetime]]:
    """(member id, entered at) of the segment's members with ids above ``after``, lowest first."""
    return list(
        SegmentMember.objects.filter(segment=segment, member_id__gt=after)
        .order_by("member_id")
        .values_list("member_id", "entered_at")[:size]
    )


def segment_changes(*, segment: Segment, since: int, size: int) -> list[SegmentChange]:
    """The segment's entries and exits after cursor ``since`` (a change's id), oldest first."""
    return list(SegmentChange.objects.filter(segment=segment, id__gt=since).order_by("id")[:size])
