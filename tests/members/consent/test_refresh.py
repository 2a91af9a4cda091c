"""Consent from events, through the pipeline: the member refresh attaches each event's statements
to the member the event resolves to, keeps them as history, moves them with merges and splits,
and rules read them."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from events.pipeline import events_process_pending
from identity.services import member_split
from members.consent.models import ConsentStatement
from members.consent.selectors import consent_in_force, members_with_consent
from members.consent.services import consent_record, forget
from members.models import Member
from members.segments.models import Segment, SegmentMember
from members.segments.services import segment_compute
from members.services import members_refresh
from tests.factories import EventFactory, SourceFactory, UserFactory
from tests.identity.test_split import LI, WANG, member_of, visit

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
MARKETING = ("marketing_sms", "marketing_wechat", "marketing_email", "marketing_push")


def in_force(member_id: int, at: datetime | None = None) -> dict[str, str | None]:
    return {
        p.purpose: p.statement.state if p.statement else None
        for p in consent_in_force(member_id=member_id, at=at or timezone.now())
    }


def held(member_id: int) -> list[tuple[str, str, int | None]]:
    return sorted(
        ConsentStatement.objects.filter(member_id=member_id).values_list("purpose", "state", "event_id")
    )


def test_an_identify_trait_is_a_statement_with_where_and_when_it_was_made():
    till = SourceFactory(pos=True, store_code="SH01")
    event = EventFactory(
        source=till, type="identify", user_id="u-1", timestamp=T0, event="",
        traits={"consent": {"version": "2026-03", "marketing_sms": True, "analytics": {"state": "denied"}}},
        context={"app": {"name": "POS", "version": "4.2"}, "device": {"id": "till-7"}},
    )  # fmt: skip
    events_process_pending()

    member = member_of(event)
    rows = ConsentStatement.objects.filter(member_id=member).order_by("purpose")
    assert [(s.purpose, s.state, s.version, s.origin) for s in rows] == [
        ("analytics", "denied", "2026-03", "trait"), ("marketing_sms", "granted", "2026-03", "trait"),
    ]  # fmt: skip
    sms = rows[1]
    assert (sms.at, sms.event_id, sms.source_id, sms.channel, sms.store_code, sms.app, sms.device_id) == (
        T0, event.pk, till.pk, "pos", "SH01", "POS 4.2", "till-7"
    )  # fmt: skip
    assert in_force(member)["marketing_sms"] == "granted"
    assert in_force(member)["marketing_email"] is None  # never asked: no consent


def test_a_consent_updated_event_and_the_legacy_trait_state_consent_too():
    app = SourceFactory(kind="app")
    first = EventFactory(source=app, type="identify", user_id="u-2", event="", timestamp=T0,
                         traits={"marketing_consent": True})  # fmt: skip
    EventFactory(source=app, user_id="u-2", event="Consent Updated", timestamp=T0 + timedelta(days=1),
                 properties={"purpose": "marketing_push", "state": "withdrawn", "version": "push-2"})  # fmt: skip
    EventFactory(source=app, user_id="u-2", event="Consent Updated", timestamp=T0 + timedelta(days=2),
                 properties={"consent": {"analytics": True}})  # fmt: skip
    events_process_pending()

    member = member_of(first)
    assert in_force(member, T0 + timedelta(hours=1)) == {**dict.fromkeys(MARKETING, "granted"),
                                                         "personalization": None, "analytics": None}  # fmt: skip
    assert in_force(member) == {**dict.fromkeys(MARKETING, "granted"), "marketing_push": "withdrawn",
                                "personalization": None, "analytics": "granted"}  # fmt: skip
    assert ConsentStatement.objects.get(purpose="marketing_push", state="withdrawn").version == "push-2"


def test_a_refresh_or_a_rebuild_records_nothing_twice():
    EventFactory(type="identify", user_id="u-3", event="", traits={"consent": {"marketing_sms": True}})
    events_process_pending()
    before = list(ConsentStatement.objects.values_list("id", "member_id", "purpose", "state", "at"))

    call_command("rebuild_members", stdout=StringIO())
    call_command("rebuild_identity", stdout=StringIO())
    call_command("rebuild_members", stdout=StringIO())

    assert list(ConsentStatement.objects.values_list("id", "member_id", "purpose", "state", "at")) == before


def test_after_a_merge_the_latest_statement_per_purpose_by_event_time_wins():
    """The store member denied SMS at the till on day 2; the app, still anonymous, had granted it
    on day 1 and then granted email on day 3. Logging in merges them: SMS stays denied (the
    till's is later), email is granted, whatever order the events arrived in."""
    store, app = SourceFactory(pos=True, store_code="SH01"), SourceFactory(kind="app")
    anon = EventFactory(source=app, user_id="", anonymous_id="anon-9", type="identify", event="",
                        timestamp=T0 + timedelta(days=3), traits={"consent": {"marketing_email": True}})  # fmt: skip
    EventFactory(source=app, user_id="", anonymous_id="anon-9", event="Consent Updated",
                 timestamp=T0 + timedelta(days=1), properties={"purpose": "marketing_sms", "state": "granted"})  # fmt: skip
    till = EventFactory(source=store, user_id="", anonymous_id="", type="identify", event="",
                        timestamp=T0 + timedelta(days=2),
                        traits={"phone": "13800138000", "consent": {"marketing_sms": False}})  # fmt: skip
    events_process_pending()
    assert member_of(anon) != member_of(till)
    assert in_force(member_of(anon))["marketing_sms"] == "granted"

    EventFactory(source=app, user_id="", anonymous_id="anon-9", type="identify", event="",
                 timestamp=T0 + timedelta(days=4), traits={"phone": "+86 138 0013 8000"})  # fmt: skip
    events_process_pending()

    survivor = member_of(till)
    assert member_of(anon) == survivor
    assert in_force(survivor)["marketing_sms"] == "denied"
    assert in_force(survivor)["marketing_email"] == "granted"
    assert len(held(survivor)) == 3  # both sides' history
    absorbed = Member.objects.get(merged_into=survivor).pk
    assert held(absorbed) == []


def test_a_split_takes_each_statement_back_with_the_member_whose_event_made_it():
    """Wang's and Li's visits were fused by the store iPad. Each stated consent on their own
    visit; staff recorded Li's refusal of email on the merged member. The split gives Wang and
    Li each their own statements again; a staff statement stays with the member it was
    recorded on."""
    wang = visit(0, WANG, traits={"consent": {"marketing_sms": True}})
    li = visit(5, LI, context={"device": {"id": "ipad"}}, traits={"consent": {"marketing_sms": False}})
    visit(10, WANG, context={"device": {"id": "ipad"}})
    events_process_pending()
    merged = member_of(wang)
    assert member_of(li) == merged
    consent_record(member_id=merged, purpose="marketing_email", state="denied", version="", note="at the desk",
                   user=UserFactory(), channel="api")  # fmt: skip
    members_refresh()
    assert in_force(merged)["marketing_sms"] == "denied"  # Li's (5 minutes later) wins while merged

    member_split(member_id=merged, identifiers=[f"phone:{LI}"], reason="two people on one iPad")
    members_refresh()

    assert member_of(wang) == merged != member_of(li)
    assert held(merged) == [("marketing_email", "denied", None), ("marketing_sms", "granted", wang.pk)]
    assert held(member_of(li)) == [("marketing_sms", "denied", li.pk)]
    assert in_force(merged)["marketing_sms"] == "granted"


def test_a_staff_statement_on_an_absorbed_member_goes_with_it_to_its_survivor_and_back():
    wang = visit(0, WANG)
    li = visit(5, LI, context={"device": {"id": "ipad"}})
    events_process_pending()
    li_member = member_of(li)
    consent_record(member_id=li_member, purpose="analytics", state="granted", version="a1", note="",
                   user=UserFactory(), channel="console")  # fmt: skip
    visit(10, WANG, context={"device": {"id": "ipad"}})  # the shared iPad fuses them into Wang's member
    events_process_pending()
    survivor = member_of(wang)
    assert Member.objects.get(pk=li_member).merged_into_id == survivor
    assert held(survivor) == [("analytics", "granted", None)]
    assert in_force(survivor)["analytics"] == "granted"

    member_split(member_id=survivor, identifiers=[f"phone:{LI}"], reason="not the same person")
    members_refresh()

    assert member_of(li) == li_member  # Li's member got its id back, and its statement with it
    assert held(li_member) == [("analytics", "granted", None)]
    assert held(survivor) == []


def test_a_rule_on_consent_follows_events_and_agrees_with_a_full_recompute():
    segment = Segment.objects.create(
        key="sms-ok", name="SMS OK", kind="dynamic", rule={"consent": "marketing_sms"}
    )
    yes = EventFactory(type="identify", user_id="yes", event="", traits={"consent": {"marketing_sms": True}})
    no = EventFactory(type="identify", user_id="no", event="", traits={"consent": {"marketing_sms": False}})
    later = EventFactory(type="identify", user_id="later", event="", timestamp=timezone.now() - timedelta(hours=1),
                         traits={"consent": {"marketing_sms": True}})  # fmt: skip
    events_process_pending()
    incremental = set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True))

    EventFactory(
        user_id="later",
        event="Consent Updated",
        properties={"purpose": "marketing_sms", "state": "withdrawn"},
    )
    events_process_pending()
    after_withdrawal = set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True))
    segment_compute(segment=segment)
    recomputed = set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True))

    assert incremental == {member_of(yes), member_of(later)}
    assert after_withdrawal == recomputed == {member_of(yes)}
    assert member_of(no) not in recomputed


def test_statements_are_history_the_database_refuses_to_change_or_delete_them():
    event = EventFactory(
        type="identify", user_id="u-4", event="", traits={"consent": {"marketing_sms": True}}
    )
    events_process_pending()
    statement = ConsentStatement.objects.get()

    for change in ({"state": "denied"}, {"at": T0}, {"version": "v9"}, {"event_id": 1}):
        with pytest.raises(IntegrityError, match="never changed"), transaction.atomic():
            ConsentStatement.objects.filter(pk=statement.pk).update(**change)
    with pytest.raises(IntegrityError, match="never deleted"), transaction.atomic():
        ConsentStatement.objects.filter(pk=statement.pk).delete()
    assert ConsentStatement.objects.get() == statement
    assert members_with_consent(member_ids=[member_of(event)], purposes=["marketing_sms"], at=timezone.now())


def test_forget_deletes_a_members_statements_and_only_theirs():
    one = EventFactory(type="identify", user_id="one", event="", traits={"consent": {"marketing_sms": True}})
    two = EventFactory(type="identify", user_id="two", event="", traits={"consent": {"analytics": True}})
    events_process_pending()
    consent_record(member_id=member_of(one), purpose="analytics", state="granted", version="", note="",
                   user=UserFactory(), channel="api")  # fmt: skip

    assert forget([member_of(one), member_of(one)]) == 2
    assert forget([]) == 0

    assert held(member_of(one)) == []
    assert held(member_of(two)) == [("analytics", "granted", two.pk)]
    with pytest.raises(IntegrityError), transaction.atomic():  # forgetting is not a standing permission
        ConsentStatement.objects.all().delete()


def test_the_demos_members_state_consent_so_its_segments_have_members_to_pull(tmp_path):
    call_command(
        "demo", members=40, seed=5, welcome_file=tmp_path / "w.txt", stdout=StringIO(), stderr=StringIO()
    )
    events_process_pending()

    stated = ConsentStatement.objects.filter(origin="trait")
    active = list(Member.objects.filter(status=Member.Status.ACTIVE).values_list("id", flat=True))
    reachable = members_with_consent(member_ids=active, purposes=["marketing_sms"], at=timezone.now())
    assert stated.filter(state="granted").exists()
    assert stated.filter(state="denied").exists()
    assert 0 < len(reachable) < len(active)
