"""Loyalty and segments became Django apps of their own (``loyalty``, ``segments``; members
``0020``): a database made by the migrations before the split upgrades in place, with its
rows, the ledger's triggers, and the permissions every role was granted."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from cdp.roles import ROLE_PERMISSIONS, roles_sync
from members.loyalty.models import PointsAccount, PointsEntry
from members.models import Member
from members.segments.models import MemberTag, Segment, SegmentMember, Tag

BEFORE_THE_SPLIT = [("members", "0019_member_becomes_proxy_of_identity")]
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
LOYALTY = ("pointsentry", "pointsaccount", "couponcampaign", "coupon")
SEGMENTS = ("segment", "tag", "membertag", "segmentwebhook")


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)  # a fresh loader: the one above cached what was applied


def _permissions(app_label: str, models: tuple[str, ...]) -> dict[tuple[str, str], int]:
    rows = Permission.objects.filter(content_type__app_label=app_label, content_type__model__in=models)
    return {(p.content_type.model, p.codename): p.pk for p in rows.select_related("content_type")}


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_split_upgrades_in_place() -> None:
    roles_sync()  # the role groups as a migrate's post_migrate left them
    executor = _migrate(BEFORE_THE_SPLIT)
    old = executor.loader.project_state(BEFORE_THE_SPLIT).apps
    assert old.get_model("members", "PointsEntry")._meta.db_table == "members_pointsentry"
    moments = {
        "first_event_at": T0, "first_event_message_id": "till-1", "first_event_source_id": 1,
        "last_event_at": T0, "last_event_message_id": "till-1", "last_event_source_id": 1,
    }  # fmt: skip
    zhang = old.get_model("identity", "Member").objects.create(**moments)
    old.get_model("members", "PointsEntry").objects.create(
        member_id=zhang.pk, kind="earn", points=120, key="order:1", cause_key="order:1",
        reason="order 1", derived=True, at=T0,
    )  # fmt: skip
    vip = old.get_model("members", "Segment").objects.create(key="vip-old", name="VIP", kind="static")
    old.get_model("members", "SegmentMember").objects.create(
        segment_id=vip.pk, member_id=zhang.pk, entered_at=T0
    )
    tag = old.get_model("members", "Tag").objects.create(key="vip-tag", name="VIP", kind="manual")
    old.get_model("members", "MemberTag").objects.create(member_id=zhang.pk, tag_id=tag.pk)
    loyalty_permissions = _permissions("members", LOYALTY)
    segments_permissions = _permissions("members", SEGMENTS)
    assert ("pointsentry", "adjust_points") in loyalty_permissions

    _migrate(executor.loader.graph.leaf_nodes())

    # The rows are where they were, read through the new apps' models.
    assert PointsAccount.objects.get(member_id=zhang.pk).balance == 120
    assert PointsEntry.objects.get(key="order:1").member_id == zhang.pk
    assert SegmentMember.objects.get(segment__key="vip-old").member_id == zhang.pk
    assert MemberTag.objects.get(tag__key="vip-tag").member_id == zhang.pk
    # The same permission rows, now under the new apps: every role's grant holds.
    assert _permissions("loyalty", LOYALTY) == loyalty_permissions
    assert _permissions("segments", SEGMENTS) == segments_permissions
    assert not _permissions("members", LOYALTY + SEGMENTS)
    for role, names in ROLE_PERMISSIONS.items():
        granted = Group.objects.get(name=role).permissions.select_related("content_type")
        assert {f"{p.content_type.app_label}.{p.codename}" for p in granted} >= set(names), role

    # The ledger's triggers still hold: a new row moves the balance, a change is refused.
    PointsEntry.objects.create(
        member=Member.objects.get(pk=zhang.pk), kind="adjust", points=-20, key="staff:1",
        cause_key="staff:1", reason="goodwill", derived=False, at=T0,
    )  # fmt: skip
    assert PointsAccount.objects.get(member_id=zhang.pk).balance == 100
    with pytest.raises(IntegrityError), transaction.atomic():
        PointsEntry.objects.filter(key="order:1").update(points=1)
    assert Segment.objects.filter(key="vip-old").exists()
    assert Tag.objects.filter(key="vip-tag").exists()
