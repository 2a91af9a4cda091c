"""The audit log: append-only in PostgreSQL (but for erasure's rewrite of its subjects), the
address each entry came from, what is recorded (points adjustments, rule and role changes),
and the API and console pages that read and export it."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.models import AuditEntry
from cdp.redaction import Redactor
from cdp.roles import Role
from cdp.services import (
    audit_entries_expire,
    audit_record,
    audit_subjects_erase,
    staff_user_ensure,
    token_issue,
)

pytestmark = pytest.mark.django_db


def client_of(role: Role, username: str | None = None) -> APIClient:
    user = staff_user_ensure(username=username or f"audit-{role}", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='t').secret}")
    return client


def entry(**fields: object) -> AuditEntry:
    defaults: dict = {
        "user": None,
        "action": AuditEntry.Action.SPLIT_MEMBER,
        "member_ids": [7],
        "channel": "api",
    }
    return audit_record(**{**defaults, **fields})


# --- append-only ---------------------------------------------------------------------------------


def run(statement: str, entry_id: int, *, erasure: bool = False, retention: bool = False) -> None:
    """``statement`` in a transaction of its own (a savepoint inside a test's), as an erasure
    runs it when ``erasure``, as retention when ``retention``."""
    with transaction.atomic(), connection.cursor() as cursor:
        if erasure:
            cursor.execute("SET LOCAL cdp.erasure = 'on'")
        if retention:
            cursor.execute("SET LOCAL cdp.retention = 'on'")
        cursor.execute(statement, [entry_id])


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM cdp_auditentry WHERE id = %s",
        "UPDATE cdp_auditentry SET action = 'export_segment' WHERE id = %s",
        "UPDATE cdp_auditentry SET actor = 'someone-else' WHERE id = %s",
        "UPDATE cdp_auditentry SET at = at - interval '1 day' WHERE id = %s",
        "UPDATE cdp_auditentry SET member_ids = '{}' WHERE id = %s",  # a subject, but no erasure said so
        "UPDATE cdp_auditentry SET detail = '' WHERE id = %s",
    ],
)
def test_the_database_refuses_to_change_or_delete_an_entry(statement):
    written = entry(detail="split of 7")

    with pytest.raises(IntegrityError, match="audit entries are never"):
        run(statement, written.pk)

    assert AuditEntry.objects.get(pk=written.pk).member_ids == [7]


def test_the_orm_cannot_either():
    written = entry()

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEntry.objects.filter(pk=written.pk).delete()
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEntry.objects.filter(pk=written.pk).update(channel="console")


@pytest.mark.django_db(transaction=True)  # SET LOCAL lasts until a real transaction ends
def test_an_erasure_may_rewrite_the_subject_column_and_nothing_else():
    written = entry(member_ids=[7, 8], detail="split of 7 (phone 138****8000)")

    run("UPDATE cdp_auditentry SET detail = '' WHERE id = %s", written.pk, erasure=True)
    for change in (
        "actor = 'someone'",
        "member_ids = '{}'",
        "action = 'export_segment'",
        "at = at - interval '1 day'",
    ):
        with pytest.raises(IntegrityError):
            run(f"UPDATE cdp_auditentry SET {change} WHERE id = %s", written.pk, erasure=True)
    with pytest.raises(IntegrityError):
        run("DELETE FROM cdp_auditentry WHERE id = %s", written.pk, erasure=True)
    with pytest.raises(IntegrityError):  # SET LOCAL ended with its transaction: refused again
        run("UPDATE cdp_auditentry SET detail = 'x' WHERE id = %s", written.pk)

    kept = AuditEntry.objects.get(pk=written.pk)
    assert (kept.member_ids, kept.detail, kept.action) == ([7, 8], "", AuditEntry.Action.SPLIT_MEMBER)


@pytest.mark.django_db(transaction=True)
def test_retention_may_delete_but_not_change():
    written = entry(detail="/api/v1/members/7/")

    with pytest.raises(IntegrityError):
        run("UPDATE cdp_auditentry SET detail = '' WHERE id = %s", written.pk, retention=True)
    run("DELETE FROM cdp_auditentry WHERE id = %s", written.pk, retention=True)

    assert not AuditEntry.objects.filter(pk=written.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_the_erasure_and_retention_services_work_under_the_guard():
    user = staff_user_ensure(username="who", role=Role.CRM_MANAGER)
    named = entry(user=user, member_ids=[7], detail="/api/v1/members/?user_id=lin-wei-0042")
    other = entry(member_ids=[9], detail="/api/v1/members/9/")

    with transaction.atomic():
        changed = audit_subjects_erase(redactor=Redactor(texts=["lin-wei-0042"]))
    named.refresh_from_db()
    assert changed == 1
    assert "lin-wei-0042" not in named.detail
    assert (named.member_ids, named.actor, named.action) == ([7], "who", AuditEntry.Action.SPLIT_MEMBER)

    written = AuditEntry.objects.count()  # the two, and the role given to "who"
    with transaction.atomic():
        expired = audit_entries_expire(
            before=timezone.now() + timedelta(seconds=1), limit=written - 1, dry_run=False
        )
    assert expired == written - 1
    assert list(AuditEntry.objects.values_list("pk", flat=True)) == [other.pk]  # the newest is left


def test_a_user_with_entries_is_deactivated_not_deleted():
    user = staff_user_ensure(username="leaver", role=Role.CRM_MANAGER)
    entry(user=user)

    with pytest.raises(Exception, match="protected"), transaction.atomic():
        user.delete()


# --- what an entry holds -----------------------------------------------------------------------


def test_an_entry_holds_who_and_the_address_and_masks_phones_in_its_detail():
    user = staff_user_ensure(username="who", role=Role.CRM_MANAGER)

    written = entry(user=user, detail="/api/v1/members/?phone=+8613800138000", address="10.1.2.3")

    assert (written.actor, written.address) == ("who", "10.1.2.3")
    assert written.detail == "/api/v1/members/?phone=138****8000"


def test_the_address_is_the_clients_and_behind_our_proxy_the_one_it_saw(settings, zhang_member):
    manager = client_of(Role.CRM_MANAGER)

    manager.get(f"/api/v1/members/{zhang_member}/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="1.1.1.1")
    settings.TRUSTED_PROXY_COUNT = 1
    manager.get(
        f"/api/v1/members/{zhang_member}/",
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.4",
    )

    addresses = AuditEntry.objects.filter(action=AuditEntry.Action.VIEW_CONTACT_DETAILS).order_by("id")
    # a client's own X-Forwarded-For is never believed; our proxy's last hop is
    assert [e.address for e in addresses] == ["203.0.113.9", "198.51.100.4"]


@pytest.fixture
def zhang_member(zhang) -> int:
    return zhang["member"]


def test_a_points_adjustment_is_audited(zhang_member):
    manager = client_of(Role.CRM_MANAGER, "points-boss")
    path = f"/api/v1/members/{zhang_member}/points/adjust/"

    first = manager.post(path, {"points": 50, "reason": "goodwill"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = manager.post(path, {"points": 50, "reason": "goodwill"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.status_code, again.status_code) == (201, 200)
    [adjusted] = AuditEntry.objects.filter(action=AuditEntry.Action.ADJUST_POINTS)  # the retry wrote nothing
    assert (adjusted.actor, adjusted.member_ids, adjusted.detail) == (
        "points-boss",
        [zhang_member],
        "+50 points: goodwill",
    )


def test_rule_changes_are_audited_from_the_api_and_the_console():
    marketing = client_of(Role.MARKETING, "mkt")
    rule = {"trait": "city", "op": "eq", "value": "Shanghai"}

    assert marketing.post("/api/v1/segments/", {"key": "sh", "name": "Shanghai", "kind": "dynamic", "rule": rule},
                          format="json").status_code == 201  # fmt: skip
    assert (
        marketing.patch("/api/v1/segments/sh/", {"name": "Shanghai people"}, format="json").status_code == 200
    )
    console = Client()
    console.force_login(staff_user_ensure(username="mkt", role=Role.MARKETING))
    console.post("/console/segments/sh/delete/")

    changes = list(
        AuditEntry.objects.filter(action=AuditEntry.Action.CHANGE_RULE)
        .order_by("id")
        .values_list("actor", "channel", "detail")
    )
    assert changes == [
        ("mkt", "api", 'segment sh: created (dynamic); rule {"trait":"city","op":"eq","value":"Shanghai"}'),
        ("mkt", "api", "segment sh: changed name"),
        ("mkt", "console", "segment sh: deleted"),
    ]


def test_role_changes_are_audited():
    boss = staff_user_ensure(username="boss", role=Role.ADMIN)

    staff_user_ensure(username="desk", role=Role.CRM_AGENT, by=boss, channel="admin")
    staff_user_ensure(username="desk", role=Role.CRM_AGENT, by=boss, channel="admin")  # the same: no entry
    staff_user_ensure(username="desk", role=Role.CRM_MANAGER, by=boss, channel="admin")

    changes = list(
        AuditEntry.objects.filter(action=AuditEntry.Action.CHANGE_ROLE, actor="boss")
        .order_by("id")
        .values_list("detail", flat=True)
    )
    assert changes == [
        "user desk: roles none -> crm_agent",
        "user desk: roles crm_agent -> crm_manager",
    ]


# --- reading and exporting -------------------------------------------------------------------


@pytest.fixture
def log() -> dict:
    alice = staff_user_ensure(username="alice", role=Role.CRM_MANAGER)
    bob = staff_user_ensure(username="bob", role=Role.MARKETING)
    entries = {
        "alice-view": entry(user=alice, action=AuditEntry.Action.VIEW_CONTACT_DETAILS, member_ids=[1, 2]),
        "alice-split": entry(user=alice, action=AuditEntry.Action.SPLIT_MEMBER, member_ids=[2, 3]),
        "bob-export": entry(user=bob, action=AuditEntry.Action.EXPORT_SEGMENT, member_ids=[], detail="=cmd"),
    }
    return {key: e.pk for key, e in entries.items()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["bob-export", "alice-split", "alice-view"]),
        ("actor=alice", ["alice-split", "alice-view"]),
        ("action=export_segment", ["bob-export"]),
        ("member=2", ["alice-split", "alice-view"]),
        ("member=3&actor=alice", ["alice-split"]),
        ("until=2000-01-01", []),
        ("since=2000-01-01&action=split_member", ["alice-split"]),
    ],
)
def test_the_privacy_officer_filters_the_log(log, query, expected):
    response = client_of(Role.PRIVACY_OFFICER).get(f"/api/v1/audit/?{query}")

    assert response.status_code == 200
    found = [e["id"] for e in response.json()["results"] if e["actor"] in ("alice", "bob")]
    assert found == [log[key] for key in expected]


def test_time_filters_select_a_window(log):
    now = timezone.now()
    since = (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    officer = client_of(Role.PRIVACY_OFFICER)

    assert (
        officer.get("/api/v1/audit/", {"since": since, "actor": "bob"}).json()["results"][0]["id"]
        == log["bob-export"]
    )
    assert officer.get("/api/v1/audit/", {"until": since, "actor": "bob"}).json()["results"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("action=peek", "action"), ("member=x", "member"), ("since=yesterday", "since"),
     ("since=2026-02-01&until=2026-01-01", "until"), ("since=2026-13-01", "since")],
)  # fmt: skip
def test_a_bad_filter_is_a_400_naming_it(query, field):
    response = client_of(Role.ADMIN).get(f"/api/v1/audit/?{query}")

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.PRIVACY_OFFICER, 200), (Role.ADMIN, 200), (Role.CRM_MANAGER, 403), (Role.CRM_AGENT, 403),
     (Role.MARKETING, 403), (Role.CHECKOUT, 403)],
)  # fmt: skip
def test_only_admins_and_the_privacy_officer_read_the_log(role, status):
    assert client_of(role).get("/api/v1/audit/").status_code == status
    assert client_of(role).get("/api/v1/audit/export/").status_code == status
    assert APIClient().get("/api/v1/audit/").status_code == 401


def test_the_export_is_a_csv_of_the_selection_and_is_itself_audited(log):
    response = client_of(Role.PRIVACY_OFFICER, "officer").get("/api/v1/audit/export/?actor=alice")
    rows = list(csv.reader(io.StringIO(response.getvalue().decode(), newline="")))

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert rows[0] == [
        "id",
        "at",
        "actor",
        "action",
        "member_ids",
        "channel",
        "address",
        "personal_fields",
        "detail",
    ]
    assert [(int(r[0]), r[2], r[4]) for r in rows[1:]] == [(log["alice-split"], "alice", "2 3"),
                                                            (log["alice-view"], "alice", "1 2")]  # fmt: skip
    exported = AuditEntry.objects.get(action=AuditEntry.Action.EXPORT_AUDIT)
    assert (exported.actor, exported.detail) == ("officer", "audit entries: actor=alice")
    bob = client_of(Role.ADMIN).get("/api/v1/audit/export/?actor=bob").getvalue().decode()
    assert "'=cmd" in bob  # a spreadsheet would run =cmd


def test_the_console_page_filters_and_exports(log):
    officer = staff_user_ensure(username="officer", role=Role.PRIVACY_OFFICER)
    console = Client()
    console.force_login(officer)

    page = console.get("/console/audit/", {"actor": "alice"})
    bad = console.get("/console/audit/", {"member": "two"})
    exported = console.get("/console/audit/export/", {"action": "export_segment"})
    agent = Client()
    agent.force_login(staff_user_ensure(username="desk", role=Role.CRM_AGENT))

    assert page.status_code == 200
    assert [e["id"] for e in page.context["entries"]] == [log["alice-split"], log["alice-view"]]
    assert "Audit log" in page.content.decode()
    assert bad.status_code == 400
    assert "member: a member id" in bad.content.decode()
    assert b"bob" in exported.getvalue()
    assert AuditEntry.objects.filter(action=AuditEntry.Action.EXPORT_AUDIT, channel="console").exists()
    assert agent.get("/console/audit/").status_code == 403


def test_the_log_pages_by_cursor():
    for n in range(5):
        entry(detail=f"n{n}")
    officer = client_of(Role.PRIVACY_OFFICER)

    first = officer.get("/api/v1/audit/?page_size=3&action=split_member").json()
    second = officer.get(
        f"/api/v1/audit/?page_size=3&action=split_member&cursor={first['next_cursor']}"
    ).json()

    assert [e["detail"] for e in first["results"] + second["results"]] == ["n4", "n3", "n2", "n1", "n0"]
    assert second["next_cursor"] is None


def test_a_role_and_scope_change_in_the_admin_is_audited_with_the_admin_who_made_it():
    boss = staff_user_ensure(username="boss", role=Role.ADMIN)
    boss.is_superuser = True
    boss.save()
    desk = staff_user_ensure(username="desk", role=Role.CRM_AGENT)
    admin = Client()
    admin.force_login(boss)
    manager_group = Group.objects.get(name=Role.CRM_MANAGER)

    response = admin.post(
        f"/admin/auth/user/{desk.pk}/change/",
        {
            "username": "desk", "is_active": "on", "is_staff": "on", "groups": [manager_group.pk],
            "date_joined_0": "2026-01-01", "date_joined_1": "10:00:00",
            "staff_scope-TOTAL_FORMS": "1", "staff_scope-INITIAL_FORMS": "0", "staff_scope-MIN_NUM_FORMS": "0",
            "staff_scope-MAX_NUM_FORMS": "1", "staff_scope-0-stores": "SH01,SH02", "staff_scope-0-channels": "",
            "staff_scope-0-user": str(desk.pk),
        },
        REMOTE_ADDR="192.0.2.10",
    )  # fmt: skip

    assert response.status_code == 302, response.content.decode()[:3000]
    entry = AuditEntry.objects.filter(action=AuditEntry.Action.CHANGE_ROLE, actor="boss").get()
    assert (entry.channel, entry.address) == ("admin", "192.0.2.10")
    assert entry.detail == "user desk: roles crm_agent -> crm_manager; scope unscoped -> stores SH01, SH02"
