"""The member row moved from members to identity (``identity.0005``, ``members.0017``): a
database made by the migrations before the move upgrades in place, rows, permissions and all."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from cdp.roles import ROLE_PERMISSIONS
from events.pipeline import events_process_pending
from identity.models import EventResolution, Identifier
from identity.models import Member as IdentityMember
from members.models import DirtyMark, Member, MemberTrait
from tests.factories import EventFactory, SourceFactory
from tests.factories.sealed import opened

BEFORE_THE_MOVE = [
    ("identity", "0004_identifier_alias_class"),
    ("members", "0018_orders_by_source_and_their_owners"),
]
T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection)  # a fresh loader: the one above cached what was applied


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_move_upgrades_in_place_and_keeps_working() -> None:
    executor = _migrate(BEFORE_THE_MOVE)
    old = executor.loader.project_state(BEFORE_THE_MOVE).apps
    OldMember = old.get_model("members", "Member")
    assert not OldMember._meta.proxy
    assert OldMember._meta.db_table == "members_member"
    moments = {
        "first_event_at": T0, "first_event_message_id": "till-1", "first_event_source_id": 1,
        "last_event_at": T0, "last_event_message_id": "till-1", "last_event_source_id": 1,
    }  # fmt: skip
    zhang = OldMember.objects.create(**moments)
    absorbed = OldMember.objects.create(**{**moments, "first_event_message_id": "app-1"})
    OldMember.objects.filter(pk=absorbed.pk).update(status="merged", merged_into=zhang)
    old.get_model("identity", "Identifier").objects.create(type="user_id", value="zhang", member_id=zhang.pk)
    old.get_model("members", "DirtyMark").objects.create(member_id=absorbed.pk)
    old.get_model("members", "MemberTrait").objects.create(
        member_id=zhang.pk,
        key="name",
        value="Zhang Wei",
        observed_at=T0,
        channel="pos",
        source_id=1,
        event_id=0,
    )
    permissions_before = dict(
        Permission.objects.filter(
            content_type__app_label="members", content_type__model="member"
        ).values_list("codename", "pk")
    )

    executor = _migrate(executor.loader.graph.leaf_nodes())

    # The rows are where they were, now identity's; members' proxy reads the same rows.
    assert IdentityMember._meta.db_table == "members_member"
    assert Member._meta.proxy
    assert IdentityMember.objects.get(pk=zhang.pk).status == IdentityMember.Status.ACTIVE
    assert IdentityMember.objects.get(pk=absorbed.pk).merged_into_id == zhang.pk
    assert Member.objects.filter(pk__in=[zhang.pk, absorbed.pk]).count() == 2
    assert Identifier.objects.get(type="user_id", value="zhang").member_id == zhang.pk
    assert list(DirtyMark.objects.values_list("member_id", flat=True)) == [absorbed.pk]
    assert opened("name", MemberTrait.objects.get(member_id=zhang.pk).value) == "Zhang Wei"
    # The same permission rows under the same content type: every role's grant holds.
    assert permissions_before == dict(
        Permission.objects.filter(
            content_type__app_label="members", content_type__model="member"
        ).values_list("codename", "pk")
    )
    assert {"view_member", "view_contact_details", "split_member"} <= permissions_before.keys()
    for role, names in ROLE_PERMISSIONS.items():
        granted = Group.objects.get(name=role).permissions.select_related("content_type")
        assert {f"{p.content_type.app_label}.{p.codename}" for p in granted} >= set(names), role
    assert not Permission.objects.filter(content_type__app_label="identity", codename__endswith="_member")

    # The pipeline goes on with the old rows: an event of the old identifier joins the old
    # member, and the refresh takes the old mark with the new ones.
    EventFactory(
        source=SourceFactory(), type="identify", user_id="zhang", anonymous_id="",
        timestamp=datetime(2026, 3, 2, tzinfo=UTC), traits={"name": "Zhang W."},
    )  # fmt: skip
    events_process_pending()
    assert list(EventResolution.objects.values_list("member_id", flat=True)) == [zhang.pk]
    assert IdentityMember.objects.get(pk=zhang.pk).last_event_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert opened("name", MemberTrait.objects.get(member_id=zhang.pk, key="name").value) == "Zhang W."
    assert not DirtyMark.objects.exists()
