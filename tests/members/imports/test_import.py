"""Importing a legacy history: what each kind writes, idempotence, resumption, the dry run."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import call_command

from cdp.models import AuditEntry
from events.models import Event, Source
from identity.models import Identifier, MemberChange
from members.imports import services
from members.imports.models import ImportJob, ImportProblem
from members.loyalty.models import Coupon, CouponRedemption, PointsAccount, PointsEntry, Tier, TierChange
from members.models import Member, MemberAggregate
from tests.factories import EventFactory, SourceFactory
from tests.factories.sealed import stored
from tests.members.imports.helpers import csv_file, drain, run_import

pytestmark = pytest.mark.django_db

MEMBERS = [
    {"member_id": "M1", "phone": "13800138000", "member_card": "C1", "name": "张三", "registered_at": "2021-03-04 10:00:00",
     "consent.marketing_sms": "true", "consent_at": "2021-03-05 09:00:00", "consent_source": "store form"},
    {"member_id": "M2", "phone": "+86 139 0013 9000", "email": "Li@Example.com", "name": "李四", "registered_at": "2022-01-01"},
    {"member_id": "M3", "phone": "12345", "name": "bad phone", "registered_at": "2022-01-01"},
    {"member_id": "", "phone": "13700137000", "name": "no key", "registered_at": "2022-01-01"},
]  # fmt: skip
ORDERS = [
    {"order_id": "O1", "member_id": "M1", "channel": "pos", "store": "S1", "total": "120.50", "currency": "CNY",
     "completed_at": "2023-05-01 12:00:00", "items": '[{"sku": "A", "price": 60.25, "quantity": 2}]'},
    {"order_id": "O2", "member_id": "M2", "channel": "web", "store": "", "total": "80", "currency": "",
     "completed_at": "2023-06-01T12:00:00+08:00", "items": ""},
    {"order_id": "O3", "member_card": "C1", "channel": "app", "store": "", "total": "30", "currency": "CNY",
     "completed_at": "2023-07-01", "items": ""},
    {"order_id": "O4", "member_id": "M2", "channel": "pos", "store": "", "total": "10", "currency": "CNY",
     "completed_at": "2023-07-01", "items": ""},
]  # fmt: skip
REFUNDS = [
    {"refund_id": "R1", "order_id": "O1", "member_id": "M1", "channel": "pos", "store": "S1", "total": "20.50",
     "currency": "CNY", "refunded_at": "2023-05-02"},
]  # fmt: skip


def _history(tmp_path):
    run_import("members", csv_file(tmp_path / "members.csv", MEMBERS))
    run_import("orders", csv_file(tmp_path / "orders.csv", ORDERS))
    run_import("refunds", csv_file(tmp_path / "refunds.csv", REFUNDS))
    drain()


def _member_of(type_, value):
    return Identifier.objects.get(type=type_, value=stored(type_, value)).member_id


def _state():
    return (
        sorted(Event.objects.values_list("source__name", "message_id", "timestamp")),
        sorted(Identifier.objects.values_list("type", "value", "member_id")),
        sorted(PointsEntry.objects.values_list("member_id", "key", "points")),
        sorted(MemberAggregate.objects.values_list("member_id", "orders", "spend", "refunded")),
    )


def test_members_orders_and_refunds_become_members_with_figures(tmp_path):
    _history(tmp_path)
    m1 = _member_of("phone", "+8613800138000")
    assert _member_of("member_card", "C1") == m1 == _member_of("anonymous_id", "crm:M1")
    m2 = _member_of("email", "li@example.com")
    assert m2 != m1
    assert Member.objects.filter(status="active").count() == 3  # M3 too: an invalid phone is only not used
    figures = MemberAggregate.objects.get(member_id=m1)
    assert (figures.orders, figures.spend, figures.refunded) == (2, 130, 20.5)  # O1 and O3 (by card), R1
    assert (figures.orders_pos, figures.orders_app) == (1, 1)
    assert figures.stores_visited == ["S1"]
    assert MemberAggregate.objects.get(member_id=m2).orders == 1  # O2; O4 (pos without store) refused
    assert PointsAccount.objects.get(member_id=m1).balance == sum(
        PointsEntry.objects.filter(member_id=m1).values_list("points", flat=True)
    )
    # Each channel and store is a source of the import's own, as a live sender would be.
    assert set(Source.objects.values_list("name", "kind", "store_code")) >= {
        ("import:crm:pos:S1", "pos", "S1"), ("import:crm:web", "web", ""), ("import:crm:app", "app", "")
    }  # fmt: skip
    consent = Event.objects.get(message_id="import:consent:M1")
    assert consent.timestamp == datetime(2021, 3, 5, 9, tzinfo=UTC)  # the mapping's default zone: UTC


def test_problems_are_reported_per_row_and_the_rest_imported(tmp_path):
    job, report = run_import("orders", csv_file(tmp_path / "orders.csv", ORDERS))
    assert (job.rows_imported, job.rows_skipped) == (3, 1)
    (problem,) = ImportProblem.objects.filter(job=job)
    assert (problem.record, problem.line, problem.field, problem.skipped) == (4, 5, "store", True)
    job, report = run_import("members", csv_file(tmp_path / "members.csv", MEMBERS))
    assert {(p.line, p.field, p.skipped) for p in report.problems} == {
        (4, "phone", False),
        (5, "member_id", True),
    }


def test_the_same_file_twice_changes_nothing(tmp_path):
    _history(tmp_path)
    before = _state()
    # The job is found by the file's contents: done already.
    job, _ = run_import("orders", csv_file(tmp_path / "orders.csv", ORDERS))
    assert job.rows_imported == 3
    # Even as a new job (the old one deleted), every row's key is there already.
    ImportJob.objects.all().delete()
    for kind, rows in (("members", MEMBERS), ("orders", ORDERS), ("refunds", REFUNDS)):
        job, report = run_import(kind, csv_file(tmp_path / f"{kind}.csv", rows))
        assert report.imported == 0
        assert report.duplicate == job.rows_duplicate > 0
    drain()
    assert _state() == before


def test_a_job_killed_in_a_batch_resumes_after_its_last_committed_batch(tmp_path, monkeypatch):
    path = csv_file(tmp_path / "orders.csv", ORDERS)
    run_import("members", csv_file(tmp_path / "members.csv", MEMBERS))
    real = services.events_ingest
    calls = {"n": 0}

    def dies_in_the_second_batch(**kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # batch 1: two sources; batch 2 dies after its first insert
            raise KeyboardInterrupt
        return real(**kwargs)

    monkeypatch.setattr(services, "events_ingest", dies_in_the_second_batch)
    job, _ = services.import_job_create(kind="orders", name="crm", path=path)
    with pytest.raises(KeyboardInterrupt):
        services.import_run(job=job, batch_size=2)
    job.refresh_from_db()
    assert (job.checkpoint, job.line, job.status) == (2, 3, "running")
    assert set(Event.objects.filter(message_id__startswith="import:order:").values_list("message_id", flat=True)) == {
        "import:order:O1", "import:order:O2"
    }  # fmt: skip
    monkeypatch.setattr(services, "events_ingest", real)
    again, created = services.import_job_create(kind="orders", name="crm", path=path)
    assert (again.pk, created) == (job.pk, False)
    services.import_run(job=again, batch_size=2)
    again.refresh_from_db()
    assert (again.status, again.checkpoint, again.rows_imported, again.rows_skipped) == ("succeeded", 4, 3, 1)
    assert Event.objects.filter(message_id__startswith="import:order:").count() == 3
    assert ImportProblem.objects.filter(job=again).count() == 1  # the refused row, reported once


def test_a_second_process_on_the_same_job_stops(tmp_path):
    path = csv_file(tmp_path / "orders.csv", ORDERS)
    job, _ = services.import_job_create(kind="orders", name="crm", path=path)

    def another_process_commits(current):
        ImportJob.objects.filter(pk=current.pk).update(checkpoint=4)

    with pytest.raises(services.ImportConflict):
        services.import_run(job=job, batch_size=2, progress=another_process_commits)
    assert Event.objects.filter(message_id="import:order:O3").count() == 0  # its batch rolled back


def test_a_dry_run_checks_everything_and_writes_nothing(tmp_path, capsys):
    events, sources = Event.objects.count(), Source.objects.count()
    call_command(
        "import", "orders", str(csv_file(tmp_path / "orders.csv", ORDERS)), "--dry-run", "--no-progress"
    )
    out = capsys.readouterr().out
    assert "line 5: store: a pos order needs its store [skipped]" in out
    assert "would import 3, already there 0, skipped 1" in out
    assert (Event.objects.count(), Source.objects.count(), ImportJob.objects.count()) == (events, sources, 0)


def test_starting_an_import_is_audited_with_the_shell_user(tmp_path, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "ops-anna")
    path = csv_file(tmp_path / "orders.csv", ORDERS)
    call_command("import", "orders", str(path), "--name", "crm", "--no-progress")
    call_command("import", "orders", str(path), "--name", "crm", "--no-progress")  # done: not a new start

    job = ImportJob.objects.get()
    (entry,) = AuditEntry.objects.filter(action=AuditEntry.Action.START_IMPORT)
    assert (entry.user, entry.channel, entry.member_ids) == (None, "cli", [])
    assert entry.detail == (
        f"import job {job.pk}: orders of crm, {job.lines_total} lines, sha256 {job.sha256[:16]}; "
        "shell user ops-anna; file orders.csv"
    )


def test_a_gb18030_file_with_a_mapping(tmp_path):
    path = tmp_path / "legacy.csv"
    path.write_bytes("会员编号,手机,姓名,注册日期\nL1,13800138000,王五,2020/05/06\n".encode("gb18030"))
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "columns:\n  会员编号: member_id\n  手机: phone\n  姓名: name\n  注册日期: registered_at\ntimezone: Asia/Shanghai\n",
        encoding="utf-8",
    )
    call_command("import", "members", str(path), "--mapping", str(mapping), "--name", "old", "--no-progress")
    event = Event.objects.get(message_id="import:member:L1")
    assert event.traits == {"phone": "13800138000", "name": "王五"}
    assert event.anonymous_id == "old:L1"
    assert event.timestamp == datetime(2020, 5, 5, 16, tzinfo=UTC)


def test_a_live_event_later_lands_on_the_imported_member(tmp_path):
    _history(tmp_path)
    m1 = _member_of("phone", "+8613800138000")
    live = SourceFactory(kind="app")
    EventFactory(source=live, user_id="app-user-1", anonymous_id="", event="Order Completed",
                 context={"traits": {"phone": "138 0013 8000"}},
                 properties={"order_id": "LIVE-1", "total": 50, "currency": "CNY"})  # fmt: skip
    drain()
    assert _member_of("user_id", "app-user-1") == m1
    assert MemberAggregate.objects.get(member_id=m1).orders == 3


def test_opening_balances_tiers_and_coupons(tmp_path):
    Tier.objects.create(key="base", name="Base", rank=0, threshold=0)
    Tier.objects.create(key="gold", name="Gold", rank=1, threshold=100000)
    _history(tmp_path)
    m1, m2 = _member_of("anonymous_id", "crm:M1"), _member_of("anonymous_id", "crm:M2")
    balances = csv_file(tmp_path / "balances.csv", [
        {"member_id": "M1", "points": "500", "at": "2023-12-31"},
        {"member_id": "M9", "points": "100", "at": ""},
        {"member_id": "M2", "points": "-5", "at": ""},
    ])  # fmt: skip
    job, report = run_import("balances", balances)
    assert (job.rows_imported, job.rows_skipped) == (1, 2)
    assert {p.reason for p in report.problems} == {
        "no member holds anonymous_id:crm:M9: import the members first",
        "is negative (-5): an opening balance carries points over, not debts",
    }
    negative = next(p for p in report.problems if p.reason.startswith("is negative"))
    assert (negative.line, negative.field, negative.skipped) == (4, "points", True)
    opening = PointsEntry.objects.get(key="opening:crm:M1")
    assert (opening.member_id, opening.points, opening.derived) == (m1, 500, False)
    tiers = csv_file(tmp_path / "tiers.csv", [
        {"member_id": "M1", "tier": "gold", "reached_at": "2023-01-01"},
        {"member_id": "M2", "tier": "platinum", "reached_at": "2023-01-01"},
    ])  # fmt: skip
    job, report = run_import("tiers", tiers)
    assert (job.rows_imported, job.rows_skipped) == (1, 1)
    coupons = csv_file(tmp_path / "coupons.csv", [
        {"code": "LEG-1", "campaign": "Legacy", "member_id": "M1", "state": "issued", "value": "20",
         "valid_from": "2024-01-01", "valid_until": "2030-01-01", "redeemed_at": "", "order_id": "", "order_total": ""},
        {"code": "LEG-2", "campaign": "Legacy", "member_id": "M2", "state": "redeemed", "value": "20",
         "valid_from": "2024-01-01", "valid_until": "2030-01-01", "redeemed_at": "2024-03-01", "order_id": "O2", "order_total": "80"},
        {"code": "LEG-3", "campaign": "Legacy", "member_id": "M1", "state": "issued", "value": "20",
         "valid_from": "2024-01-01", "valid_until": "2030-01-01", "redeemed_at": "", "order_id": "", "order_total": ""},
    ])  # fmt: skip
    job, report = run_import("coupons", coupons)
    assert (job.rows_imported, job.rows_skipped) == (2, 1)
    assert report.problems[0].reason == "already holds a coupon of this campaign"
    drain()
    account = PointsAccount.objects.get(member_id=m1)
    assert account.tier == "gold"
    assert account.tier_since == datetime(2023, 1, 1, tzinfo=UTC)
    assert TierChange.objects.get(member_id=m1, to_tier="gold").reason == "reached in crm"
    assert account.balance == 500 + 120 + 30 - 20  # the opening balance, O1 and O3, R1 taken back
    assert account.balance == sum(PointsEntry.objects.filter(member_id=m1).values_list("points", flat=True))
    assert PointsAccount.objects.get(member_id=m2).tier == "base"
    assert Coupon.objects.get(code="LEG-1").member_id == m1
    redemption = CouponRedemption.objects.get(coupon__code="LEG-2")
    assert (redemption.member_id, redemption.order_id, redemption.redeemed_at) == (
        m2,
        "O2",
        datetime(2024, 3, 1, tzinfo=UTC),
    )
    # All three again: nothing twice.
    ImportJob.objects.all().delete()
    for kind, path in (("balances", balances), ("tiers", tiers), ("coupons", coupons)):
        _, report = run_import(kind, path)
        assert report.imported == 0
    assert PointsEntry.objects.filter(key__startswith="opening:").count() == 1
    assert Coupon.objects.count() == 2


def test_a_tier_grant_follows_its_member_through_a_merge_and_a_split_and_is_in_the_access_export(tmp_path):
    from identity.services import member_split
    from members.loyalty.models import TierGrant
    from members.privacy.selectors import access_export

    Tier.objects.create(key="base", name="Base", rank=0, threshold=0)
    Tier.objects.create(key="gold", name="Gold", rank=1, threshold=100000)
    _history(tmp_path)
    m1, m2 = _member_of("anonymous_id", "crm:M1"), _member_of("anonymous_id", "crm:M2")
    tiers = csv_file(
        tmp_path / "tiers.csv", [{"member_id": "M2", "tier": "gold", "reached_at": "2023-01-01"}]
    )
    run_import("tiers", tiers)
    drain()
    assert PointsAccount.objects.get(member_id=m2).tier == "gold"

    # A live event names M1's card and M2's email: one person, M1 (registered first) survives.
    EventFactory(source=SourceFactory(kind="app"), user_id="", anonymous_id="till-9", event="Order Completed",
                 context={"traits": {"member_card": "C1", "email": "li@example.com"}},
                 properties={"order_id": "LIVE-2", "total": 5, "currency": "CNY"})  # fmt: skip
    drain()
    assert Member.objects.get(pk=m2).merged_into_id == m1
    assert TierGrant.objects.get(key="tier:crm:M2").member_id == m1
    assert PointsAccount.objects.get(member_id=m1).tier == "gold"

    export = access_export(member_id=m1, user=AnonymousUser())
    assert export is not None
    assert [(g["tier"], g["key"], g["at"]) for g in export["points"]["tier_grants"]] == [
        ("gold", "tier:crm:M2", datetime(2023, 1, 1, tzinfo=UTC))
    ]
    assert export["points"]["tier"]["key"] == "gold"

    # Staff split M2's identifiers off again: M2 stands again (its id back), its grant with it.
    member_split(
        member_id=m1,
        identifiers=["anonymous_id:crm:M2", "email:li@example.com", "phone:+8613900139000"],
        reason="two people",
    )
    drain()
    assert Member.objects.get(pk=m2).status == Member.Status.ACTIVE
    assert TierGrant.objects.get(key="tier:crm:M2").member_id == m2
    assert (PointsAccount.objects.get(member_id=m2).tier, PointsAccount.objects.get(member_id=m1).tier) == (
        "gold",
        "base",
    )


def test_the_backlog_is_resolved_a_member_at_a_time_each_member_changed_once(tmp_path):
    """A legacy member's events (its key as anonymous id) are resolved together, so identity
    hands each member over to the refresh once, not once per event (in event time, the two
    registrations would share a batch, then the two orders: each member changed twice)."""
    members = [
        {"member_id": "M1", "phone": "13800138000", "registered_at": "2021-01-01"},
        {"member_id": "M2", "phone": "13900139000", "registered_at": "2021-01-02"},
    ]
    orders = [
        {"order_id": f"O{i}", "member_id": m, "channel": "web", "total": "10", "completed_at": at}
        for i, (m, at) in enumerate((("M1", "2021-01-03"), ("M2", "2021-01-04")))
    ]
    run_import("members", csv_file(tmp_path / "members.csv", members))
    run_import("orders", csv_file(tmp_path / "orders.csv", orders))

    assert services.imported_identities_resolve(batch_size=2) == 4

    changed = sorted(MemberChange.objects.values_list("member_id", flat=True))
    assert changed == sorted({_member_of("anonymous_id", "crm:M1"), _member_of("anonymous_id", "crm:M2")})


@pytest.mark.parametrize(("named_by", "order"), [("member_id", "by person"), ("phone", "event time")])
def test_a_backlog_whose_orders_name_members_by_phone_only_is_resolved_in_event_time(
    tmp_path, monkeypatch, named_by, order
):
    """An order named by phone only has an anonymous id of its own: a member at a time it would
    come after its member's later events and re-resolve the member (correct, dearer), so a
    backlog with more than ``BY_PERSON_MAX_ALONE`` of such events is taken in event time."""
    members = [
        {"member_id": f"M{i}", "phone": f"1380013800{i}", "registered_at": "2021-01-01"} for i in range(3)
    ]
    orders = [
        {"order_id": f"O{i}", named_by: f"M{i}" if named_by == "member_id" else f"1380013800{i}",
         "channel": "web", "total": "10", "completed_at": "2021-02-01"}
        for i in range(3)
    ]  # fmt: skip
    run_import("members", csv_file(tmp_path / "members.csv", members))
    run_import("orders", csv_file(tmp_path / "orders.csv", orders))
    taken: list[str] = []
    for name, label in (
        ("events_process_backlog_by_person", "by person"),
        ("events_process_backlog_in_event_time", "event time"),
    ):
        real = getattr(services, name)
        monkeypatch.setattr(
            services, name, lambda real=real, label=label, **kw: taken.append(label) or real(**kw)
        )

    assert services.imported_identities_resolve() == 6

    assert taken == [order]
    drain()
    assert {_member_of("phone", f"+861380013800{i}") for i in range(3)} == {
        _member_of("anonymous_id", f"crm:M{i}") for i in range(3)
    }
