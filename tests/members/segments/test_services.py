"""Full recompute of segments: one statement per segment, with history, size and timing;
static lists; segments computed after the segments they read."""

from datetime import timedelta

import pytest
from django.utils import timezone

from members.models import DirtyMark
from members.segments.models import (
    MemberTag,
    Segment,
    SegmentChange,
    SegmentMember,
    SegmentsRecheck,
    Tag,
    TagChange,
)
from members.segments.services import (
    definition_recompute,
    memberships_compute_all,
    memberships_recheck_due,
    segment_compute,
    segment_static_set,
    tag_compute,
)

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

    memberships_compute_all()

    assert members_of(inner) == members_of(outer) == {zhang["member"]}
    assert "reads what reads it back: segment loop-2" in Segment.objects.get(key="loop-1").error


def tagged(tag: Tag) -> set[int]:
    return set(MemberTag.objects.filter(tag=tag).values_list("member_id", flat=True))


def test_a_rule_tag_is_added_and_removed_as_members_start_and_stop_matching(zhang):
    tag = Tag.objects.create(key="big-spender", name="Big spender", kind="rule",
                             rule={"aggregate": "spend", "op": "gte", "value": 300})  # fmt: skip

    assert tag_compute(tag=tag) == 1
    assert tag_compute(tag=tag) == 0  # nothing changed, nothing recorded
    tag.rule = {"aggregate": "spend", "op": "gte", "value": 1000}
    tag.save()
    tag_compute(tag=tag)

    assert tagged(tag) == set()
    assert list(
        TagChange.objects.filter(tag=tag).order_by("id").values_list("member_id", "action", "by")
    ) == [
        (zhang["member"], "added", None),
        (zhang["member"], "removed", None),
    ]


def test_an_edited_definition_recomputes_what_reads_it_and_nothing_else(zhang):
    tag = Tag.objects.create(
        key="pos-buyer",
        name="POS buyer",
        kind="rule",
        rule={"aggregate": "orders_pos", "op": "gte", "value": 1},
    )
    reader = Segment.objects.create(
        key="pos-buyers", name="POS buyers", kind="dynamic", rule={"tag": "pos-buyer"}
    )
    second = Segment.objects.create(
        key="reads-reader", name="x", kind="dynamic", rule={"segment": "pos-buyers"}
    )
    unrelated = Segment.objects.create(
        key="everyone", name="All", kind="dynamic", rule={"aggregate": "orders", "op": "gte", "value": 0}
    )

    computed = definition_recompute(kind="tag", pk=tag.pk)

    assert [s.key for s in computed] == ["pos-buyers", "reads-reader"]
    assert tagged(tag) == members_of(reader) == members_of(second) == {zhang["member"]}
    assert members_of(unrelated) == set()  # not recomputed: its rule did not change


def test_members_whose_windows_expired_are_marked_for_a_refresh_once(zhang):
    DirtyMark.objects.all().delete()
    now = timezone.now()
    SegmentsRecheck.objects.update_or_create(member_id=zhang["member"], defaults={"due_at": now})

    assert memberships_recheck_due(now=now - timedelta(seconds=1)) == 0
    assert memberships_recheck_due(now=now) == 1
    assert memberships_recheck_due(now=now) == 0  # already marked
    assert list(DirtyMark.objects.values_list("member_id", flat=True)) == [zhang["member"]]


def test_the_command_recomputes_everything_and_says_how_it_went(zhang):
    from io import StringIO

    from django.core.management import call_command

    Segment.objects.create(
        key="buyers", name="Buyers", kind="dynamic", rule={"aggregate": "orders", "op": "gte", "value": 1}
    )
    Segment.objects.create(
        key="broken", name="Broken", kind="dynamic", rule={"aggregate": "orders", "op": "gtt", "value": 1}
    )
    out = StringIO()

    call_command("compute_segments", stdout=out)

    lines = {
        line.split()[0]: line
        for line in out.getvalue().splitlines()
        if line and not line.startswith("Recomputed")
    }
    assert " 1 members" in lines["buyers"]
    assert "unknown operator 'gtt'" in lines["broken"]
    assert members_of(Segment.objects.get(key="buyers")) == {zhang["member"]}
