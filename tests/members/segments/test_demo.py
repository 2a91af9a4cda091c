"""The demo's tags and segments fill as the worker refreshes the demo members, and the first
recheck after buyers appear computes the RFM groups."""

from io import StringIO

import pytest
from django.core.management import call_command

from events.pipeline import events_process_pending
from members.segments.demo import DEMO_SEGMENTS
from members.segments.models import MemberTag, RfmCutoffs, Segment, SegmentChange, SegmentMember
from members.segments.services import memberships_compute_all
from members.segments.tasks import memberships_recheck

pytestmark = pytest.mark.django_db


def test_the_demo_fills_its_segments_and_the_first_recheck_computes_rfm(tmp_path):
    call_command(
        "demo", members=40, seed=5, welcome_file=tmp_path / "w.txt", stdout=StringIO(), stderr=StringIO()
    )
    events_process_pending()
    keys = [key for key, _, _ in DEMO_SEGMENTS]
    assert set(Segment.objects.filter(key__in=keys).values_list("key", flat=True)) == set(keys)
    assert SegmentMember.objects.filter(segment__key__startswith="lifecycle-").exists()
    assert not MemberTag.objects.filter(tag__key__startswith="rfm-").exists()  # no quintiles yet

    memberships_recheck()

    assert RfmCutoffs.objects.exists()
    assert SegmentMember.objects.filter(segment__key__startswith="rfm-").exists()
    changes = SegmentChange.objects.count()
    memberships_recheck()  # once only
    memberships_compute_all(rfm_cutoffs=False)
    assert SegmentChange.objects.count() == changes  # the refreshes left what a full recompute gives
    for segment in Segment.objects.all():
        assert segment.size == SegmentMember.objects.filter(segment=segment).count(), segment.key
