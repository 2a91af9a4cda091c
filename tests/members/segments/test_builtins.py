"""Built in: the computed tags and one segment per RFM group and lifecycle stage exist after
every migrate, are kept current idempotently without touching what staff made, and the
built-in segments hold exactly the members carrying their tag."""

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps.registry import Apps
from django.core.management.sql import emit_post_migrate_signal
from django.test import override_settings

from members.models import MemberAggregate
from members.segments.builtins import (
    builtins_install,
    computed_tags_compute_all,
    rfm_cutoffs_compute,
    rfm_edges_load,
)
from members.segments.computed import (
    COMPUTED_TAG_KEYS,
    LIFECYCLE_STAGES,
    RFM_GROUPS,
    computed_tags_of,
    purchase_facts_of,
)
from members.segments.models import MemberTag, Segment, SegmentMember, Tag
from members.segments.services import segment_compute
from tests.factories.members import MemberAggregateFactory
from tests.members.conftest import T0
from tests.members.segments.test_computed import DAY, NOW, WINDOWS

pytestmark = pytest.mark.django_db

BUILT_IN_KEYS = {f"rfm-{g.replace('_', '-')}" for g in RFM_GROUPS} | {
    f"lifecycle-{s.replace('_', '-')}" for s in LIFECYCLE_STAGES
}


def snapshot() -> tuple[list, list]:
    return (
        list(Tag.objects.order_by("key").values_list("pk", "key", "name", "kind", "description", "updated_at")),
        list(Segment.objects.order_by("key").values_list("pk", "key", "name", "kind", "rule", "built_in",
                                                         "description", "updated_at")),
    )  # fmt: skip


def test_after_migrate_the_computed_tags_and_built_in_segments_exist():
    tags = dict(Tag.objects.filter(kind="computed").values_list("key", "name"))
    segments = {s.key: s for s in Segment.objects.filter(built_in=True)}

    assert set(tags) == COMPUTED_TAG_KEYS
    assert tags["rfm-cant-lose-them"] == "Can't Lose Them"
    assert set(segments) == BUILT_IN_KEYS
    assert all(s.kind == "dynamic" and s.rule == {"tag": s.key} for s in segments.values())
    assert segments["rfm-champions"].name == "RFM: Champions"
    assert segments["lifecycle-at-risk"].description == "Last purchase between 90 and 180 days ago."


def test_the_post_migrate_signal_installs_them_again():
    Segment.objects.filter(built_in=True).delete()
    Tag.objects.filter(kind="computed").delete()

    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")

    assert set(Tag.objects.filter(kind="computed").values_list("key", flat=True)) == COMPUTED_TAG_KEYS
    assert set(Segment.objects.filter(built_in=True).values_list("key", flat=True)) == BUILT_IN_KEYS


def test_installing_twice_changes_nothing_and_mends_what_was_changed():
    before = snapshot()
    builtins_install()
    assert snapshot() == before

    Segment.objects.filter(key="rfm-lost").update(name="Mine", rule={"tag": "rfm-champions"})
    Tag.objects.filter(key="lifecycle-new").update(description="edited")
    builtins_install()

    lost = Segment.objects.get(key="rfm-lost")
    assert (lost.name, lost.rule) == ("RFM: Lost", {"tag": "rfm-lost"})
    assert lost.updated_at > next(row for row in before[1] if row[1] == "rfm-lost")[-1]
    assert Tag.objects.get(key="lifecycle-new").description == "First purchase in the last 30 days."
    assert [row[:5] for row in snapshot()[0]] == [row[:5] for row in before[0]]


@override_settings(LIFECYCLE_NEW_DAYS=14, LIFECYCLE_ACTIVE_DAYS=60, LIFECYCLE_CHURN_DAYS=365)
def test_descriptions_follow_the_configured_windows():
    builtins_install()

    assert Tag.objects.get(key="lifecycle-new").description == "First purchase in the last 14 days."
    assert Segment.objects.get(key="lifecycle-churned").description == "No purchase in the last 365 days."


def test_what_staff_made_under_a_built_in_key_is_left_alone(caplog):
    Segment.objects.filter(key="rfm-lost").delete()
    staff_segment = Segment.objects.create(key="rfm-lost", name="Ours", kind="static")
    Tag.objects.filter(key="channel-omnichannel").delete()
    staff_tag = Tag.objects.create(key="channel-omnichannel", name="Ours", kind="manual")
    buyer = MemberAggregateFactory(orders=2, spend=Decimal(50), first_purchase_at=NOW - DAY,
                                   last_purchase_at=NOW - DAY, orders_pos=1, orders_web=1).member  # fmt: skip
    hand_tagged = MemberAggregateFactory().member
    MemberTag.objects.create(member=hand_tagged, tag=staff_tag)

    with caplog.at_level(logging.WARNING, logger="members.segments.builtins"):
        builtins_install()
    computed_tags_compute_all(now=NOW)

    assert Segment.objects.filter(key="rfm-lost").values_list("pk", "name", "built_in").get() == (
        staff_segment.pk, "Ours", False
    )  # fmt: skip
    assert Tag.objects.filter(key="channel-omnichannel").values_list("pk", "kind").get() == (
        staff_tag.pk,
        "manual",
    )
    assert "'rfm-lost' was made by staff" in caplog.text
    assert "'channel-omnichannel' is a manual tag" in caplog.text
    assert set(MemberTag.objects.filter(tag=staff_tag).values_list("member_id", flat=True)) == {
        hand_tagged.pk
    }
    assert set(MemberTag.objects.filter(member=buyer).values_list("tag__key", flat=True)) == {"lifecycle-new"}


def test_nothing_to_install_when_the_members_app_is_migrated_to_zero():
    Segment.objects.filter(built_in=True).delete()

    builtins_install(apps=Apps(installed_apps=()))

    assert not Segment.objects.filter(built_in=True).exists()


def test_the_built_in_segments_hold_the_members_carrying_their_tag():
    # Buyers spread over recency and frequency so that several groups and every stage fill.
    for n in range(40):
        last = NOW - (n * 7) * DAY
        MemberAggregateFactory(orders=1 + n % 9, spend=Decimal(25 * (1 + (n * 7) % 23)),
                               first_purchase_at=last - (n % 5) * 40 * DAY, last_purchase_at=last,
                               orders_pos=n % 2, orders_app=1 - n % 2)  # fmt: skip
    MemberAggregateFactory()
    rfm_cutoffs_compute(now=NOW)
    computed_tags_compute_all(now=NOW)

    filled = set()
    for segment in Segment.objects.filter(built_in=True):
        segment_compute(segment=segment, now=NOW)
        members = set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True))
        carriers = set(MemberTag.objects.filter(tag__key=segment.key).values_list("member_id", flat=True))
        assert (members, segment.size, segment.error) == (carriers, len(carriers), "")
        if members:
            filled.add(segment.key)
    assert {"lifecycle-new", "lifecycle-active", "lifecycle-at-risk", "lifecycle-churned"} <= filled
    assert len(filled & {f"rfm-{g.replace('_', '-')}" for g in RFM_GROUPS}) >= 5


def test_a_member_built_by_the_pipeline_gets_its_computed_tags(zhang):
    """Zhang bought in the store and in the app (partly refunded) in September."""
    now = T0 + timedelta(days=10)
    rfm_cutoffs_compute(now=now)

    computed_tags_compute_all(now=now)

    figures = MemberAggregate.objects.filter(member_id=zhang["member"]).values().get()
    expected = computed_tags_of(purchase_facts_of(figures), rfm_edges_load(), WINDOWS, now)
    assert expected >= {"lifecycle-new", "channel-omnichannel"}
    assert (
        set(MemberTag.objects.filter(member_id=zhang["member"]).values_list("tag__key", flat=True))
        == expected
    )
    assert not MemberTag.objects.filter(member_id=zhang["absorbed"]).exists()
