"""Full recompute of segments: one statement per segment, with history, size and timing;
static lists; segments computed after the segments they read."""

import pytest
from django.utils import timezone

from members.segments.models import Segment, SegmentChange, SegmentMember
from members.segments.services import segment_compute, segment_static_set, segments_compute_all

pytestmark = pytest.mark.django_db


def members_of(segment: Segment) -> set[int]:
    return set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True))


def test_a_dynamic_segment_records_who_entered_and_left(zhang):
    segment = Segment.objects.create(key="buyers", name="Buyers", kind="dynamic",
                                     rule={"aggregate": "orders", "op": "gte", "value": 2})  # fmt: skip

    segment_compute(segment=segment)
    segment.rule = {"aggregate": "orders", "op": "gte", "value": 5}
    segment.save()
    segment_compute(segment=segment)

    assert members_of(segment) == set()
    assert list(
        SegmentChange.objects.filter(segment=segment).order_by("id").values_list("member_id", "change")
    ) == [
        (zhang["member"], "entered"),
        (zhang["member"], "exited"),
    ]
    assert (segment.size, segment.error) == (0, "")
    assert segment.computed_at is not None
    assert segment.compute_ms is not None


def test_a_broken_rule_is_recorded_and_the_membership_kept(zhang):
    segment = Segment.objects.create(
        key="s", name="S", kind="dynamic", rule={"trait": "city", "op": "eq", "value": "x"}
    )
    SegmentMember.objects.create(segment=segment, member_id=zhang["member"], entered_at=timezone.now())
    segment.rule = {"trait": "city", "op": "gtt", "value": 1}

    segment_compute(segment=segment)

    assert "unknown operator 'gtt'" in segment.error
    assert members_of(segment) == {zhang["member"]}


def test_a_static_list_counts_an_absorbed_id_as_its_survivor(zhang):
    segment = Segment.objects.create(key="vip-list", name="VIP list", kind="static")

    segment_static_set(segment=segment, member_ids=[zhang["absorbed"], 999_999])

    assert members_of(segment) == {zhang["member"]}
    assert segment.size == 1


def test_segments_are_computed_after_the_segments_they_read_and_cycles_are_refused(zhang):
    inner = Segment.objects.create(key="a-inner", name="inner", kind="dynamic",
                                   rule={"aggregate": "orders", "op": "gte", "value": 1})  # fmt: skip
    outer = Segment.objects.create(key="0-outer", name="outer", kind="dynamic", rule={"segment": "a-inner"})
    Segment.objects.create(key="loop-1", name="l1", kind="dynamic", rule={"segment": "loop-2"})
    Segment.objects.create(key="loop-2", name="l2", kind="dynamic", rule={"segment": "loop-1"})

    segments_compute_all()

    assert members_of(inner) == members_of(outer) == {zhang["member"]}
    assert "read it back" in Segment.objects.get(key="loop-1").error
