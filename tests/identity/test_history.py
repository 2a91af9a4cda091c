"""The merge history tells the truth: every record names an event of its survivor and the
identifiers through which it linked the pair, in the pipeline (any arrival order and
batching), after a split, and after a rebuild, which keeps a history equivalent to the
incremental one (``identity_rebuild``)."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import Event
from identity.models import EventIdentifier, EventResolution, MergeRecord
from identity.models import Identifier as IdentifierRow
from identity.selectors import member_history, merge_history_audit
from identity.services import identity_rebuild, identity_resolve_events, member_split
from members.models import Member
from tests.factories import EventFactory, SourceFactory
from tests.identity.streams import create_event, raw_events

T0 = datetime(2026, 10, 1, tzinfo=UTC)
LI, WANG = "+8613800138001", "+8613800138002"


def member_of(event: Event | int) -> int:
    return EventResolution.objects.get(event_id=getattr(event, "pk", event)).member_id


def assert_tells_the_truth(record: MergeRecord) -> None:
    """Checked against the graph now: right after the run that wrote ``record`` the survivor is
    active; a later run may merge it in turn, and the record then speaks of where it leads."""
    assert record.event_id is not None  # every merge names the event that linked the pair
    survivor = Member.objects.get(pk=record.survivor_id).merged_into_id or record.survivor_id
    assert member_of(record.event_id) == survivor  # the event is the survivor's
    mentioned = {
        f"{type_}:{value}"
        for type_, value in EventIdentifier.objects.filter(
            event_id=record.event_id, dropped=False
        ).values_list("identifier__type", "identifier__value")
    }
    assert record.identifiers  # it linked them through something ...
    assert set(record.identifiers) <= mentioned  # ... that the event carried and used ...
    owners = {
        f"{type_}:{value}": owner
        for type_, value, owner in IdentifierRow.objects.values_list("type", "value", "member_id")
    }
    assert {owners[text] for text in record.identifiers} == {survivor}  # ... now the survivor's
    absorbed = Member.objects.get(pk=record.absorbed_id)
    assert (absorbed.status, absorbed.merged_into_id) == (Member.Status.MERGED, survivor)
    founding = Event.objects.get(
        timestamp=absorbed.first_event_at,
        message_id=absorbed.first_event_message_id,
        source_id=absorbed.first_event_source_id,
    )
    assert member_of(founding) == survivor  # the absorbed member's events are there


@pytest.fixture
def tight_limits(settings):
    """One phone per member and two devices: identifiers get dropped and late events replay."""
    settings.IDENTITY_RULES = {"phone": {"limit": 1}, "device_id": {"limit": 2}}


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), raws=raw_events())
def test_every_record_tells_the_truth_in_any_arrival_order_and_after_a_rebuild(data, raws, tight_limits):
    with transaction.atomic():  # each example starts from, and leaves, an empty graph
        _check_history(data, raws)
        transaction.set_rollback(True)


def _check_history(data, raws) -> None:
    sources = [SourceFactory(), SourceFactory()]
    events = [create_event(raw, sources) for raw in raws]
    arrival = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=4)))
    for start, end in zip([0, *cuts], [*cuts, len(arrival)], strict=True):
        written_before = MergeRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0
        identity_resolve_events(arrival[start:end])
        for record in MergeRecord.objects.filter(id__gt=written_before):
            assert Member.objects.get(pk=record.survivor_id).status == Member.Status.ACTIVE
            assert_tells_the_truth(record)
    assert merge_history_audit().truthful
    merged_into = dict(Member.objects.filter(status=Member.Status.MERGED).values_list("id", "merged_into_id"))
    told = set(MergeRecord.objects.values_list("absorbed_id", flat=True))
    assert set(merged_into) <= told  # every merged member says why

    identity_rebuild(batch_size=3)  # batch boundaries: members that stand a while, then merge

    for record in MergeRecord.objects.all():
        assert_tells_the_truth(record)
    rebuilt = dict(Member.objects.filter(status=Member.Status.MERGED).values_list("id", "merged_into_id"))
    assert set(rebuilt) == set(MergeRecord.objects.values_list("absorbed_id", flat=True))  # covers all
    assert {pk: rebuilt.get(pk) for pk in merged_into} == merged_into  # each still leads where it did
    audit = merge_history_audit()
    assert audit.truthful
    assert audit.records == len(rebuilt)  # one record per merged member


@pytest.mark.django_db
def test_a_replay_cites_each_merge_by_its_own_event_not_another_customers_late_one():
    source = SourceFactory()

    def seen(minutes: int, message: str, **fields) -> Event:
        fields.setdefault("anonymous_id", "")
        return EventFactory.create(source=source, message_id=message, user_id=fields.pop("user_id", ""),
                            timestamp=T0 + timedelta(minutes=minutes), **fields)  # fmt: skip

    wang_app = seen(4, "wang-app", context={"device": {"id": "wang-phone"}})
    wang_pos = seen(
        7, "wang-pos", user_id="wang", context={"externalIds": [{"id": "W1", "type": "member_card"}]}
    )
    li_pos = seen(5, "li-pos", traits={"phone": LI})
    identity_resolve_events([wang_app, wang_pos, li_pos])
    wang_card_member = member_of(wang_pos)
    assert member_of(wang_app) != wang_card_member
    # Both late: Li's earlier visit (first in event time, so the old code cited it for every
    # merge of the batch), and the app login that links Wang's two members.
    li_earlier = seen(0, "li-earlier", anonymous_id="li-web", traits={"phone": LI})
    wang_login = seen(6, "wang-login", user_id="wang", context={"device": {"id": "wang-phone"}})
    identity_resolve_events([li_earlier, wang_login])

    record = MergeRecord.objects.get(absorbed_id=wang_card_member)
    assert record.survivor_id == member_of(wang_app) == member_of(wang_pos)
    assert record.cause == MergeRecord.Cause.REPLAY
    # Wang's card member now joins through the user id the login gave Wang's app member.
    assert (record.event_id, record.identifiers) == (wang_pos.pk, ["user_id:wang"])
    for each in MergeRecord.objects.all():  # Li's old member too: now the earlier visit's
        assert_tells_the_truth(each)
    assert merge_history_audit().truthful


@pytest.mark.django_db
def test_a_merge_a_late_event_undoes_gives_the_member_its_id_back_and_the_history_says_why(settings):
    settings.IDENTITY_RULES = {"device_id": {"limit": 2}}

    def seen(hours: int, message: str, *devices: str, **fields) -> Event:
        return EventFactory.create(user_id="", anonymous_id=fields.pop("anonymous_id", ""), message_id=message,
                            context={"externalIds": [{"id": d, "type": "device_id"} for d in devices]},
                            timestamp=T0 + timedelta(hours=hours), **fields)  # fmt: skip

    shop = seen(2, "shop", "d1", traits={"phone": LI})
    app = seen(3, "app", "d2", anonymous_id="b")
    identity_resolve_events([shop])
    identity_resolve_events([app])
    app_member, shop_member = member_of(app), member_of(shop)
    link = seen(4, "link", "d1", "d2")
    identity_resolve_events([link])
    assert member_of(app) == shop_member
    assert MergeRecord.objects.get().event_id == link.pk

    # Earlier than all of them, d1 was seen with d3: in event time the link would give a member
    # three devices, so it drops d2 and never merged the app's member.
    earlier = seen(1, "earlier", "d1", "d3")
    identity_resolve_events([earlier])

    assert member_of(app) == app_member  # its old id, active again
    assert Member.objects.get(pk=app_member).status == Member.Status.ACTIVE
    assert member_of(shop) == member_of(earlier) == member_of(link) != shop_member
    record = MergeRecord.objects.get(absorbed_id=shop_member, cause=MergeRecord.Cause.REPLAY)
    # The shop's member now is the earlier one's: its founding event joins it through d1.
    assert (record.survivor_id, record.event_id, record.identifiers) == (
        member_of(earlier), shop.pk, ["device_id:d1"],
    )  # fmt: skip
    assert_tells_the_truth(record)
    assert merge_history_audit().truthful


@pytest.mark.django_db
def test_after_a_split_the_history_shows_each_member_only_what_is_theirs():
    def visit(minutes: int, phone: str, **fields) -> Event:
        event = EventFactory.create(user_id="", anonymous_id="", type="identify", traits={"phone": phone},
                             timestamp=T0 + timedelta(minutes=minutes), **fields)  # fmt: skip
        identity_resolve_events([event])  # one at a time: Li's member stands before the merge
        return event

    wang_first = visit(0, WANG)
    li_first = visit(5, LI, context={"device": {"id": "ipad"}})
    li = member_of(li_first)
    wang_ipad = visit(10, WANG, context={"device": {"id": "ipad"}})  # the shared iPad fuses them
    wang = member_of(wang_first)
    (merge,) = member_history(member_id=wang)
    assert (merge.survivor_id, merge.absorbed_id, merge.event_id) == (wang, li, wang_ipad.pk)
    assert merge.identifiers == ["device_id:ipad", f"phone:{WANG}"]

    member_split(member_id=wang, identifiers=[f"phone:{LI}"], reason="two people on one iPad")

    assert member_of(li_first) == li  # Li's member is back
    assert merge_history_audit().truthful
    for member, others in ((wang, {f"phone:{LI}"}), (li, {f"phone:{WANG}", "device_id:ipad"})):
        entries = member_history(member_id=member)
        assert [entry.kind for entry in entries] == ["split", "merge"]
        assert not {text for entry in entries for text in entry.identifiers} & others
        assert all(entry.event_id is None or member_of(entry.event_id) == member for entry in entries)
    assert member_history(member_id=li)[0].identifiers == [f"phone:{LI}"]  # the split, told to Li


@pytest.mark.django_db
def test_the_demo_history_tells_the_truth_and_the_check_command_says_so():
    call_command("demo", "--members", "25", "--seed", "7", "--welcome-file", "/dev/null", stdout=StringIO())
    events = list(Event.objects.order_by("id"))
    # Small batches in arrival order, as the worker takes them: late store uploads replay.
    for start in range(0, len(events), 40):
        identity_resolve_events(events[start : start + 40])
    assert MergeRecord.objects.filter(cause=MergeRecord.Cause.REPLAY).exists()
    out = StringIO()
    call_command("check_merge_history", stdout=out)
    assert "The merge history tells the truth." in out.getvalue()
    assert "0 without a record" in out.getvalue()

    # A record citing another customer's event and identifiers, as replays used to write.
    record = MergeRecord.objects.order_by("id").first()
    other = (
        EventResolution.objects.exclude(member_id=record.survivor_id)
        .exclude(member__merged_into_id=record.survivor_id)
        .first()
    )
    other_ids = list(IdentifierRow.objects.filter(member_id=other.member_id).values_list("type", "value")[:1])
    MergeRecord.objects.filter(pk=record.pk).update(
        event_id=other.event_id, identifiers=[f"{t}:{v}" for t, v in other_ids]
    )
    with pytest.raises(CommandError):
        call_command("check_merge_history", stdout=StringIO(), stderr=StringIO())
    assert merge_history_audit().foreign_event == [record.pk]
