"""Splitting a wrong merge: the result is as if the merge had never happened, and stays so."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from events.models import Event
from events.pipeline import events_process_pending
from identity.identifiers import Identifier
from identity.models import EventResolution, SplitRecord
from identity.models import Identifier as IdentifierRow
from identity.resolution import Separation
from identity.services import SplitRefused, member_split
from members.models import Member, MemberTrait
from members.services import members_refresh
from tests.factories import EventFactory
from tests.factories.sealed import opened, stored
from tests.identity.partitions import reference_partition, stored_partition

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 10, 1, tzinfo=UTC)
LI, WANG = "+8613800138001", "+8613800138002"


def visit(minutes: int, phone: str, **fields):
    return EventFactory(user_id="", anonymous_id="", type="identify", traits={"phone": phone, **fields.pop("traits", {})},
                        timestamp=T0 + timedelta(minutes=minutes), **fields)  # fmt: skip


def member_of(event) -> int:
    return EventResolution.objects.get(event=event).member_id


@pytest.fixture
def wrong_merge():
    """Wang was a member first; then both checked out on the shared store iPad, and two phones
    per member are allowed, so the iPad fused them."""
    wang_first = visit(0, WANG, traits={"name": "Wang"})
    li_first = visit(5, LI, context={"device": {"id": "ipad"}}, traits={"name": "Li"})
    wang_ipad = visit(10, WANG, context={"device": {"id": "ipad"}})
    events_process_pending()
    assert len({member_of(e) for e in (wang_first, li_first, wang_ipad)}) == 1
    return wang_first, li_first, wang_ipad


def test_split_undoes_the_wrong_merge(wrong_merge):
    wang_first, li_first, wang_ipad = wrong_merge
    merged = member_of(wang_first)
    li_before = EventResolution.objects.get(event=li_first)  # Li's own member was absorbed by Wang's

    record = member_split(
        member_id=merged, identifiers=["phone:138 0013 8001"], reason="two people on one iPad"
    )

    assert member_of(wang_first) == member_of(wang_ipad) == merged
    assert member_of(li_first) != merged
    assert IdentifierRow.objects.get(type="phone", value=stored("phone", LI)).member_id == member_of(li_first)
    # The split says Li's phone is not the same person as everything else the member held,
    # the shared iPad included: the iPad stays with the member that keeps the rest.
    assert IdentifierRow.objects.get(type="device_id", value="ipad").member_id == merged
    assert sorted(record.resulting_members) == sorted({merged, member_of(li_first)})
    assert record.identifiers == [f"phone:{stored('phone', LI)}"]  # by its blind index
    assert li_before.member_id == merged


def test_a_split_off_member_gets_its_old_id_back():
    li_first = visit(0, LI, context={"device": {"id": "ipad"}})
    events_process_pending()
    li_member = member_of(li_first)
    wang = visit(10, WANG, context={"device": {"id": "ipad"}})
    wang_later = visit(20, WANG)
    events_process_pending()
    assert member_of(wang) == li_member  # Li's member absorbed Wang's visit

    member_split(member_id=li_member, identifiers=[f"phone:{WANG}"], reason="not the same person")

    assert member_of(li_first) == li_member
    assert member_of(wang) == member_of(wang_later) != li_member
    assert Member.objects.get(pk=member_of(wang)).status == Member.Status.ACTIVE


def test_after_a_split_the_same_link_does_not_merge_again(wrong_merge):
    wang_first, li_first, _ = wrong_merge
    member_split(member_id=member_of(wang_first), identifiers=[f"phone:{LI}"], reason="split")

    again = visit(30, LI, context={"device": {"id": "ipad"}}, traits={"email": "li@example.com"})
    events_process_pending()

    assert member_of(again) == member_of(li_first) != member_of(wang_first)


def test_split_then_rebuild_equals_resolution_that_never_merged(wrong_merge):
    wang_first, *_ = wrong_merge
    member_split(member_id=member_of(wang_first), identifiers=[f"phone:{LI}"], reason="split")
    members_refresh()
    after_split = stored_partition()
    traits_after_split = {
        (m, k, str(opened(k, v))) for m, k, v in MemberTrait.objects.values_list("member_id", "key", "value")
    }

    call_command("rebuild_identity", stdout=StringIO())

    assert stored_partition() == after_split
    assert {
        (m, k, str(opened(k, v))) for m, k, v in MemberTrait.objects.values_list("member_id", "key", "value")
    } == traits_after_split
    events = list(Event.objects.all())
    separation = Separation(
        frozenset({Identifier("phone", stored("phone", LI))}),  # as stored: by their blind index
        frozenset({Identifier("phone", stored("phone", WANG)), Identifier("device_id", "ipad")}),
    )
    assert after_split == reference_partition(events, [separation])  # as if never merged
    assert after_split != reference_partition(events)  # and not the merged answer


@pytest.mark.parametrize(
    ("identifiers", "field"),
    [
        ([f"phone:{LI}", f"phone:{WANG}", "device_id:ipad"], "identifiers"),
        (["phone:13800138999"], "identifiers"),
        (["phone:not-a-phone"], "identifiers"),
        (["nonsense"], "identifiers"),
        ([], "identifiers"),
    ],
)
def test_impossible_splits_are_refused_with_the_field(wrong_merge, identifiers, field):
    with pytest.raises(SplitRefused) as refused:
        member_split(member_id=member_of(wrong_merge[0]), identifiers=identifiers, reason="x")

    assert refused.value.field == field
    assert not SplitRecord.objects.exists()


def test_split_needs_a_reason_and_an_active_member(wrong_merge):
    with pytest.raises(SplitRefused, match="why"):
        member_split(member_id=member_of(wrong_merge[0]), identifiers=[f"phone:{LI}"], reason=" ")
    with pytest.raises(SplitRefused) as refused:
        member_split(member_id=999999, identifiers=[f"phone:{LI}"], reason="x")
    assert refused.value.field == "member"


def test_split_command(wrong_merge):
    out = StringIO()
    call_command("split_member", str(member_of(wrong_merge[0])), "--identifier", f"phone:{LI}", "--reason", "iPad",
                 stdout=out)  # fmt: skip

    assert "now held by members" in out.getvalue()
    with pytest.raises(CommandError, match="identifiers"):
        call_command("split_member", str(member_of(wrong_merge[0])), "--identifier", "phone:13800138999",
                     "--reason", "x", stdout=StringIO())  # fmt: skip


def test_an_alias_can_be_split_and_a_rebuild_keeps_the_alias_classes():
    old = EventFactory(
        user_id="login-old", anonymous_id="", type="identify", timestamp=T0, traits={"phone": LI}
    )
    new = EventFactory(
        user_id="login-new", anonymous_id="", type="identify", timestamp=T0 + timedelta(minutes=1)
    )
    link = EventFactory(user_id="login-new", anonymous_id="", previous_id="login-old", type="alias", event="",
                        timestamp=T0 + timedelta(minutes=2))  # fmt: skip
    events_process_pending()
    merged = member_of(link)
    assert member_of(old) == member_of(new) == merged
    classes = set(IdentifierRow.objects.exclude(alias_class="").values_list("type", "value", "alias_class"))
    assert classes == {("user_id", "login-new", "login-new"), ("user_id", "login-old", "login-new")}

    call_command("rebuild_identity", stdout=StringIO())
    assert member_of(link) == merged
    assert (
        set(IdentifierRow.objects.exclude(alias_class="").values_list("type", "value", "alias_class"))
        == classes
    )

    member_split(member_id=merged, identifiers=["user_id:login-old"], reason="the alias was a mistake")

    assert member_of(old) != member_of(new) == member_of(link)
    assert not IdentifierRow.objects.exclude(alias_class="").exists()  # one id each: no class left
    assert stored_partition() == reference_partition(
        list(Event.objects.all()),
        [Separation(frozenset({Identifier("user_id", "login-old")}),
                    frozenset(Identifier(t, v) for t, v in [("user_id", "login-new"), ("anonymous_id", "login-old"),
                                                             ("phone", LI)]))],
    )  # fmt: skip
