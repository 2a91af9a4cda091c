"""Erasure, end to end: a person with events in every channel, merges, a split, points, a
coupon, tags, segments and webhook deliveries is erased through the API; then every text and
JSON column of every table holds nothing readable of her, in any written form; a late event
for her phone is stripped on arrival; rebuilds bring nothing back; totals do not change."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from cdp.models import AuditEntry
from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.models import Event
from events.pipeline import events_process_pending
from identity.models import ErasedIdentifier, EventResolution, Identifier, Member, MergeRecord, SplitRecord
from members.imports.models import ImportJob, ImportProblem
from members.insights import funnel_events
from members.loyalty.models import Coupon, CouponRedemption, PointsAccount, PointsEntry
from members.marks import members_mark_dirty
from members.models import Group, MemberAggregate, MemberOrder, MemberTrait
from members.privacy.models import PrivacyRequest
from members.privacy.services import erasure_request, erasure_run
from members.segments.models import MemberTag, SegmentChange, SegmentMember
from members.segments.webhooks.delivery import webhook_deliver
from members.services import members_refresh
from tests.factories.sealed import stored
from tests.members.privacy.person import (
    EMAIL,
    PHONE,
    at,
    lin_lives,
    ok,
    post,
    readable_anywhere,
    written_forms,
)
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def lin():
    yield from lin_lives()


def totals() -> dict[str, object]:
    """What the retailer's figures are made of."""
    return {
        "points": PointsEntry.objects.aggregate(total=Sum("points"))["total"],
        "balances": PointsAccount.objects.aggregate(total=Sum("balance"))["total"],
        "ledger_rows": PointsEntry.objects.count(),
        "order_totals": MemberOrder.objects.aggregate(total=Sum("total"))["total"],
        "orders": MemberOrder.objects.count(),
        "spend": MemberAggregate.objects.aggregate(total=Sum("spend"))["total"],
        "coupons": Coupon.objects.count(),
        "redemptions": CouponRedemption.objects.count(),
    }


def funnel_summary() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {funnel_events.TABLE} ORDER BY member_id, event")
        return cursor.fetchall()


def erase(member: int, django_capture_on_commit_callbacks) -> dict:
    officer = staff_client(Role.PRIVACY_OFFICER)
    with django_capture_on_commit_callbacks(execute=True):  # the worker's task runs at the commit
        response = officer.post(
            f"/api/v1/members/{member}/erase/", {"reference": "DSR-2026-0042"}, format="json"
        )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "received"
    done = ok(officer.get(f"/api/v1/privacy/requests/{response.json()['id']}/")).json()
    assert done["status"] == "done", done
    return done


def test_an_erased_person_is_nowhere_in_the_database_and_stays_erased(
    lin, django_capture_on_commit_callbacks
):
    # A legacy import refused a row of hers, quoting her phone as the file wrote it.
    job = ImportJob.objects.create(
        kind="members", name="crm", file_name="m.csv", path="/nowhere", sha256="0" * 64
    )
    ImportProblem.objects.create(
        job=job, record=7, line=8, field="registered_at", reason=f"row of {PHONE[3:]}: no time"
    )
    forms = written_forms()
    before = readable_anywhere(forms)
    # The search finds her everywhere she is: it is no vacuous pass.
    for place in (
        "events_event.traits", "events_event.context", "events_event.properties", "events_event.user_id",
        "events_event.anonymous_id", "events_rejectedevent.payload", "identity_identifier.value",
        "identity_splitrecord.others", "identity_mergerecord.identifiers",
        "members_group.traits", "members_pointsentry.reason",
        "members_webhookdelivery.response", "cdp_auditentry.detail", f"{ImportProblem._meta.db_table}.reason",
    ):  # fmt: skip
        assert place in before, place
    # Her phone, email and names are sealed at rest (tests/members/privacy/test_sealing.py): the
    # profile holds them, but nothing readable of them.
    assert "members_membertrait.value" not in before
    # So is the reason staff gave for a split (it names her phone): erasure opens it to clean it.
    assert "identity_splitrecord.reason" not in before
    assert any(form in r.reason_text for r in SplitRecord.objects.all() for form in forms)
    assert MemberTrait.objects.filter(member_id=lin.member, key__in=["phone", "email", "name"]).count() == 3
    figures = totals()
    assert MemberOrder.objects.filter(member_id=lin.member).count() == 4
    assert SegmentMember.objects.filter(member_id=lin.member).count() >= 2  # big-spenders, invited, RFM ...
    assert MemberTag.objects.filter(member_id=lin.member, tag__key="vip").exists()

    funnel_events.summary_from_scratch()

    done = erase(lin.member, django_capture_on_commit_callbacks)

    assert readable_anywhere(forms) == {}
    # The funnels' summary holds what the log still holds of her (the deleted event is gone
    # from both at once), not what it held before.
    kept = funnel_summary()
    funnel_events.summary_from_scratch()
    assert funnel_summary() == kept
    assert not [form for r in SplitRecord.objects.all() for form in forms if form in r.reason_text]
    counts = done["counts"]
    assert counts["identifiers.phone"] == counts["identifiers.email"] == 1
    assert counts["events_deleted"] == 1
    assert counts["events_stripped"] >= 9
    assert counts["fingerprints"] >= 9
    assert counts["left_segments"] >= 2
    assert counts["left_tags"] >= 1
    # The figures stay, under a member that names nobody.
    assert totals() == figures
    member = Member.objects.get(pk=lin.member)
    assert member.status == Member.Status.ERASED
    assert MemberOrder.objects.filter(member_id=lin.member).count() == 4
    assert not MemberTrait.objects.filter(member_id=lin.member).exists()
    assert not Identifier.objects.filter(member_id=lin.member).exists()
    assert not SegmentMember.objects.filter(member_id=lin.member).exists()
    assert not MemberTag.objects.filter(member_id=lin.member).exists()
    exits = SegmentChange.objects.filter(member_id=lin.member, change="exited")
    assert set(exits.values_list("reason", flat=True)) == {"erased"}
    # The club she called keeps its name and size; its contact (her email) is gone.
    assert Group.objects.get(group_id="club-runners").traits == {"name": "Huaihai Runners", "members": 40}
    # Zhou Min keeps her own card and order; what a till wrote of Lin's in her event is gone.
    assert Identifier.objects.get(value="MC-99-ZHOU").member_id == lin.zhou
    assert MemberOrder.objects.filter(member_id=lin.zhou, order_id="BJ-77").exists()
    # The syncing tool is told: the webhook's next batch carries the exit, marked erased.
    webhook_deliver(webhook_id=lin.webhook)
    last = lin.receiver.bodies[-1]["changes"]
    assert {"member_id": lin.member, "change": "exited", "reason": "erased"}.items() <= last[-1].items()
    # The request is listed for the privacy officer, and was audited.
    listed = ok(staff_client(Role.PRIVACY_OFFICER).get("/api/v1/privacy/requests/?kind=erasure")).json()
    assert [r["id"] for r in listed["results"]] == [done["id"]]
    assert AuditEntry.objects.filter(action="erase_member", member_ids=[lin.member]).count() == 1
    # She is found by nothing.
    manager = staff_client(Role.CRM_MANAGER)
    assert ok(manager.get("/api/v1/members/", {"phone": "138 0013 8000"})).json()["results"] == []
    assert manager.get(f"/api/v1/members/{lin.member}/").status_code == 404

    # A late event for her phone (and a new name) arrives over HTTP: stripped, not resolved.
    ok(post(lin.sources["app"], "identify", {
        "anonymousId": "anon-new-install", "messageId": "late-1", "timestamp": at(0.1),
        "traits": {"phone": "+86 138 0013 8000", "name": "Xiuying Lindqvist", "email": "LIN.XIUYING@EXAMPLE.COM"},
    }))  # fmt: skip
    ok(post(lin.sources["pos"], "track", {
        "anonymousId": "till-9", "messageId": "late-2", "event": "Order Completed", "timestamp": at(0.05),
        "context": {"traits": {"phone": "13800138000"}},
        "properties": {"order_id": "POS-9901", "total": 66, "currency": "CNY"},
    }))  # fmt: skip
    events_process_pending()
    late = Event.objects.get(message_id="late-1")
    assert (late.user_id, late.anonymous_id, late.traits) == ("", "", {})
    assert late.context["cdp"]["erased"] is True
    order = Event.objects.get(message_id="late-2")
    assert order.properties == {"order_id": "POS-9901", "total": 66, "currency": "CNY"}  # the figures' part
    assert not EventResolution.objects.filter(event__message_id__in=["late-1", "late-2"]).exists()
    assert readable_anywhere(forms) == {}
    assert Member.objects.filter(status=Member.Status.ACTIVE).count() == 1  # Zhou Min only
    assert ok(manager.get("/api/v1/members/", {"email": EMAIL})).json()["results"] == []

    # Rebuilding everything from the events brings nobody back and changes no figure.
    call_command("rebuild_identity", verbosity=0)
    call_command("rebuild_members", verbosity=0)
    events_process_pending()
    assert Member.objects.get(pk=lin.member).status == Member.Status.ERASED
    assert Member.objects.filter(status=Member.Status.ACTIVE).count() == 1
    assert not Identifier.objects.filter(value__in=[PHONE, EMAIL]).exists()
    assert readable_anywhere(forms) == {}
    assert totals() == figures
    assert MergeRecord.objects.filter(identifiers__contains=[f"phone:{PHONE}"]).count() == 0
    assert all("phone:" + PHONE not in r.others for r in SplitRecord.objects.all())


def test_erasing_again_or_an_unknown_member_is_a_404_and_each_role_gets_its_answer(lin):
    path = f"/api/v1/members/{lin.member}/erase/"
    expected = {None: 401, Role.CRM_AGENT: 403, Role.CRM_MANAGER: 403, Role.MARKETING: 403,
                Role.CHECKOUT: 403}  # fmt: skip
    for role, status in expected.items():
        assert staff_client(role).post(path, {}, format="json").status_code == status, role
    for role in (Role.PRIVACY_OFFICER, Role.CRM_AGENT, Role.MARKETING):
        listing = staff_client(role).get("/api/v1/privacy/requests/")
        assert listing.status_code == (200 if role == Role.PRIVACY_OFFICER else 403)
    admin = staff_client(Role.ADMIN)
    assert admin.post(path, {"reference": "x" * 201}, format="json").status_code == 400
    assert admin.post("/api/v1/members/999999999/erase/", {}, format="json").status_code == 404
    bad = admin.get("/api/v1/privacy/requests/?status=finished")
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "status")

    first = admin.post(path, {}, format="json")  # received (no commit here: the worker has not run)
    assert first.status_code == 202
    request = PrivacyRequest.objects.get(pk=first.json()["id"])
    assert request.status == "received"
    done = erasure_run(request_id=request.pk)
    fingerprints = ErasedIdentifier.objects.count()
    again = erasure_run(request_id=request.pk)  # idempotent: a request done is not run again
    assert (done.status, again.status, again.done_at) == ("done", "done", done.done_at)
    assert ErasedIdentifier.objects.count() == fingerprints
    assert admin.post(path, {}, format="json").status_code == 404  # nobody to erase any more
    assert ErasedIdentifier.objects.filter(erasure_id=request.pk).count() >= 9


def test_an_absorbed_id_erases_the_whole_person(lin, django_capture_on_commit_callbacks):
    absorbed = Member.objects.filter(merged_into_id=lin.member).values_list("pk", flat=True).first()
    assert absorbed is not None

    done = erase(absorbed, django_capture_on_commit_callbacks)

    assert done["member_id"] == lin.member
    assert Member.objects.get(pk=lin.member).status == Member.Status.ERASED
    assert readable_anywhere(written_forms()) == {}


def test_the_balance_is_still_the_sum_of_the_ledger_and_nothing_recomputes_an_erased_member(
    lin, django_capture_on_commit_callbacks
):
    erase(lin.member, django_capture_on_commit_callbacks)
    account = PointsAccount.objects.get(member_id=lin.member)
    ledger = PointsEntry.objects.filter(member_id=lin.member).aggregate(total=Sum("points"))["total"]

    members_mark_dirty(member_ids=[lin.member])
    members_refresh()

    assert account.balance == ledger > 0
    assert PointsAccount.objects.get(member_id=lin.member).balance == ledger
    assert MemberOrder.objects.filter(member_id=lin.member).aggregate(total=Sum("total"))["total"] == Decimal(
        "567.00"
    )
    assert not SegmentMember.objects.filter(member_id=lin.member).exists()
    # The ledger's guard still refuses any other change, erasure or not.
    with pytest.raises(IntegrityError, match="never changed"):
        _as_an_erasure(
            "UPDATE members_pointsentry SET points = points + 1 WHERE member_id = %s", [lin.member]
        )


def _as_an_erasure(statement: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('cdp.erasure', 'on', true)")
        cursor.execute(statement, params)


def failing_hook(member_ids: list[int]) -> int:
    raise RuntimeError(f"could not forget {EMAIL}")


def test_an_erasure_that_fails_changes_nothing_and_says_so_without_the_data(lin, settings):
    settings.PRIVACY_ERASURE_HOOKS = ["tests.members.privacy.test_erasure.failing_hook"]
    # A legacy import refused a row of hers, quoting her phone as the file wrote it.
    job = ImportJob.objects.create(
        kind="members", name="crm", file_name="m.csv", path="/nowhere", sha256="0" * 64
    )
    ImportProblem.objects.create(
        job=job, record=7, line=8, field="registered_at", reason=f"row of {PHONE[3:]}: no time"
    )
    forms = written_forms()
    before = readable_anywhere(forms)
    request = erasure_request(
        member_id=lin.member, user=staff_user_ensure(username="officer", role=Role.PRIVACY_OFFICER)
    )

    failed = erasure_run(request_id=request.pk)

    assert (failed.status, failed.error) == (
        "failed",
        "RuntimeError: the erasure was rolled back; see the worker's log.",
    )
    assert Member.objects.get(pk=lin.member).status == Member.Status.ACTIVE
    assert Identifier.objects.filter(
        type="email", value=stored("email", EMAIL), member_id=lin.member
    ).exists()
    assert not ErasedIdentifier.objects.exists()
    assert readable_anywhere(forms).keys() == before.keys()
