"""Each built-in alert rule driven from real data to firing and back to resolved; the
de-duplication, acknowledgement, resolution by hand and escalation; the notices (signed chat
webhooks in three flavours, email) and their history; a condition registered by another app."""

import base64
import hashlib
import hmac
import importlib
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.core import mail
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from cdp.alerting import Check, Finding
from cdp.models import AuditEntry
from events.models import Event, RejectedEvent
from events.parking import event_park, parked_events_replay
from events.pipeline import events_process_pending
from members.insights.services import insights_refresh
from members.privacy.retention import retention_apply
from members.segments.models import Segment, SegmentWebhook
from members.segments.services import segment_compute
from ops.builtins import KPI_DROP_PARAMS
from ops.models import Alert, AlertNotice, AlertRule, NotifyTarget
from ops.services import AlertStateError, Evaluation, alert_acknowledge, alert_resolve
from ops.services import alerts_evaluate as evaluate
from tests.factories import EventFactory, SourceFactory, UserFactory
from tests.members.segments.test_webhooks import Receiver, verified

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def alerts_evaluate(**kwargs: Any) -> Evaluation:
    """As beat does: each rule's transaction commits, and its notices go out after (a test's
    transaction never commits, so the callbacks are run here)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        result = evaluate(**kwargs)
    for key, error in result.errors.items():
        assert key in EXPECTED_ERRORS, f"rule {key} failed: {error}"
    return result


EXPECTED_ERRORS = {"kpi-drop", "few-events", "broken"}


def only(key: str, **changes: Any) -> AlertRule:
    """Evaluate this built-in rule alone (the others would fire on the same data)."""
    AlertRule.objects.exclude(key=key).update(enabled=False)
    rule = AlertRule.objects.get(key=key)
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.enabled = True
    rule.save()
    return rule


def open_alerts(rule: AlertRule) -> dict[str, Alert]:
    return {a.subject: a for a in Alert.objects.filter(rule=rule).exclude(status=Alert.Status.RESOLVED)}


def resolved(rule: AlertRule) -> list[str]:
    return sorted(
        Alert.objects.filter(rule=rule, status=Alert.Status.RESOLVED).values_list("subject", flat=True)
    )


def test_the_built_in_rules_are_there_with_the_reports_levels():
    levels = dict(AlertRule.objects.filter(built_in=True).values_list("key", "level"))
    assert levels == {
        "pipeline-backlog": "red", "services-unreachable": "red", "parked-work": "red", "staff-burst": "red",
        "kpi-drop": "yellow", "silent-tills": "yellow", "rejected-share": "yellow",
        "webhook-off": "blue", "segment-failing": "blue", "retention-behind": "blue", "table-size": "blue",
    }  # fmt: skip


# -- red -------------------------------------------------------------------------------------------


def test_pipeline_backlog_fires_while_an_old_event_waits_and_resolves_once_processed():
    rule = only("pipeline-backlog")
    now = timezone.now()
    EventFactory(received_at=now - timedelta(minutes=3))
    alerts_evaluate(now=now)
    assert open_alerts(rule) == {}  # 3 minutes: within the rule's 5
    events_process_pending()
    EventFactory(received_at=now - timedelta(minutes=9))
    alerts_evaluate(now=now)
    alert = open_alerts(rule)["pipeline"]
    assert alert.level == "red"
    assert alert.value > 8 * 60
    events_process_pending()
    alerts_evaluate(now=now)
    assert open_alerts(rule) == {}
    assert resolved(rule) == ["pipeline"]


def test_services_unreachable_fires_for_the_broker_and_the_database(settings):
    rule = only("services-unreachable")
    alerts_evaluate()
    assert open_alerts(rule) == {}
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = "1"  # the probe connects afresh, as a new request would
    try:
        alerts_evaluate()
    finally:
        connection.settings_dict["PORT"] = port
    assert set(open_alerts(rule)) == {"broker", "database"}
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    alerts_evaluate()
    assert open_alerts(rule) == {}
    assert resolved(rule) == ["broker", "database"]


def test_parked_events_fire_and_resolve_once_replayed():
    rule = only("parked-work")
    event = EventFactory()
    assert event_park(
        event_id=event.pk, stage="identity.services.identity_resolve_events", error=ValueError("bad")
    )
    alerts_evaluate()
    assert open_alerts(rule)["parked events"].value == 1
    parked_events_replay()
    alerts_evaluate()
    assert open_alerts(rule) == {}
    assert resolved(rule) == ["parked events"]


def test_a_burst_of_exports_by_one_staff_user_fires_and_resolves_once_the_window_passed():
    rule = only("staff-burst", params={"entries": 3, "members": 1000}, window_minutes=60)
    bulk, calm = UserFactory(username="bulk"), UserFactory(username="calm")
    for _ in range(4):
        AuditEntry.objects.create(
            user=bulk, actor="bulk", action=AuditEntry.Action.EXPORT_SEGMENT, channel="api"
        )
    AuditEntry.objects.create(user=calm, actor="calm", action=AuditEntry.Action.EXPORT_SEGMENT, channel="api")
    for _ in range(10):  # other actions are not a leak
        AuditEntry.objects.create(
            user=calm, actor="calm", action=AuditEntry.Action.RECORD_CONSENT, channel="api"
        )
    now = timezone.now()
    alerts_evaluate(now=now)
    assert set(open_alerts(rule)) == {"user bulk"}
    alerts_evaluate(now=now + timedelta(minutes=61))
    assert open_alerts(rule) == {}
    assert resolved(rule) == ["user bulk"]


def test_member_views_naming_many_members_fire_too():
    rule = only("staff-burst", params={"entries": 100, "members": 50})
    agent = UserFactory(username="agent")
    AuditEntry.objects.create(
        user=agent,
        actor="agent",
        action=AuditEntry.Action.VIEW_CONTACT_DETAILS,
        channel="api",
        member_ids=list(range(1, 61)),
    )
    alerts_evaluate()
    assert open_alerts(rule)["user agent"].value == 1


# -- yellow ----------------------------------------------------------------------------------------


def at(hour: int, minute: int = 0) -> datetime:
    """Today at this UTC time (the test settings' time zone is UTC)."""
    return timezone.now().replace(hour=hour, minute=minute, second=0, microsecond=0)


def test_a_silent_till_fires_during_opening_hours_and_resolves_when_it_sends(settings):
    settings.TIME_ZONE = "UTC"
    rule = only("silent-tills", params={"open": "10:00", "close": "22:00"}, window_minutes=60)
    till, busy = SourceFactory(pos=True, store_code="SH01"), SourceFactory(pos=True, store_code="SH02")
    SourceFactory()  # a web source is no till
    alerts_evaluate(now=at(10, 30))  # (the first evaluation starts counting traffic from here)
    assert open_alerts(rule) == {}  # the window started before opening
    EventFactory(source=busy, received_at=at(10, 45))
    alerts_evaluate(now=at(11, 30))
    assert set(open_alerts(rule)) == {"store SH01"}
    alerts_evaluate(now=at(23, 0))
    assert set(open_alerts(rule)) == {"store SH01"}  # closed: nothing new is said, the alert stays
    EventFactory(source=till, received_at=at(11, 40))
    EventFactory(source=busy, received_at=at(11, 50))  # (else it falls silent: 10:45 is over an hour ago)
    alerts_evaluate(now=at(12, 0))
    assert open_alerts(rule) == {}
    assert resolved(rule) == ["store SH01"]


def test_a_sources_rejected_share_fires_and_resolves_as_good_events_dilute_it():
    rule = only("rejected-share", params={"share": 0.05, "min_events": 10}, window_minutes=60)
    source, fine = SourceFactory(), SourceFactory()
    now = timezone.now()
    alerts_evaluate(now=now)  # starts counting
    received = now - timedelta(minutes=5)
    EventFactory.create_batch(15, source=source, received_at=received)
    EventFactory.create_batch(20, source=fine, received_at=received)
    RejectedEvent.objects.bulk_create(
        RejectedEvent(source=source, received_at=received, endpoint="track", code="invalid", reason="bad")
        for _ in range(5)
    )
    alerts_evaluate(now=now)
    alert = open_alerts(rule)[f"source {source.pk}"]
    assert alert.value == pytest.approx(0.25)
    assert set(open_alerts(rule)) == {f"source {source.pk}"}
    EventFactory.create_batch(100, source=source, received_at=received)  # 5 of 120: 4.2 %
    alerts_evaluate(now=now)
    assert open_alerts(rule) == {}
    assert resolved(rule) == [f"source {source.pk}"]


def _orders(day: date, *totals: int) -> None:
    """Orders placed at noon (``TIME_ZONE``) of ``day``, resolved and rolled up as the beat does."""
    at = datetime.combine(day, time(12), tzinfo=ZoneInfo(django_settings.TIME_ZONE))
    for total in totals:
        EventFactory(
            event="Order Completed",
            timestamp=at,
            properties={"order_id": f"O-{uuid.uuid4().hex[:12]}", "total": str(total), "currency": "CNY"},
        )
    events_process_pending()
    insights_refresh()


def test_a_kpi_day_down_against_the_mean_of_its_28_days_fires_and_resolves_from_the_rollups():
    rule = only("kpi-drop", params={"kpis": ["sales"], "drop": 0.2, "period": "day", "baseline": 28})
    now = datetime(2026, 3, 2, 9, tzinfo=ZoneInfo(django_settings.TIME_ZONE))
    for n in range(28):  # 1 to 28 February: 100 a day
        _orders(date(2026, 2, 1) + timedelta(days=n), 100)
    _orders(date(2026, 3, 1), 50)  # yesterday: half the baseline
    alerts_evaluate(now=now)
    alert = open_alerts(rule)["kpi sales"]
    assert alert.level == "yellow"
    assert alert.value == pytest.approx(0.5)
    assert alert.summary == "Net sales 2026-03-01: 50.00, 50% below the mean of the previous 28 days (100.00)"
    _orders(date(2026, 3, 1), 40)  # 90: 10% down, within the rule's 20%
    alerts_evaluate(now=now)
    assert open_alerts(rule) == {}
    assert resolved(rule) == ["kpi sales"]


def test_a_kpi_week_is_judged_once_complete_against_the_4_weeks_before():
    rule = only(
        "kpi-drop", params={"kpis": ["sales", "orders"], "drop": 0.2, "period": "week", "baseline": 4}
    )
    tuesday = datetime(2026, 3, 3, 9, tzinfo=ZoneInfo(django_settings.TIME_ZONE))
    for monday in (date(2026, 1, 26), date(2026, 2, 2), date(2026, 2, 9), date(2026, 2, 16)):
        _orders(monday + timedelta(days=2), 350, 350)
    _orders(date(2026, 2, 25), 300, 100)  # the last complete week (23 February to 1 March): sales 400 of 700
    _orders(date(2026, 3, 2), 1)  # this week's Monday: not complete, not judged
    alerts_evaluate(now=tuesday)
    assert set(open_alerts(rule)) == {"kpi sales"}  # 2 orders, as in every week: no drop
    assert open_alerts(rule)["kpi sales"].summary.startswith(
        "Net sales week of 2026-02-23: 400.00, 43% below"
    )
    _orders(date(2026, 2, 26), 300)
    alerts_evaluate(now=tuesday)
    assert resolved(rule) == ["kpi sales"]


def test_a_kpi_rule_with_a_kpi_the_board_does_not_have_says_so():
    rule = only("kpi-drop", params={"kpis": ["happiness"]})
    result = alerts_evaluate()
    assert "params.kpis must be a list of KPI keys" in result.errors["kpi-drop"]
    assert open_alerts(rule) == {}


def test_migrating_turns_the_waiting_kpi_rule_on_unless_staff_changed_it():
    turn_on = importlib.import_module("ops.migrations.0002_kpi_drop_rule_on").kpi_drop_rule_on
    waiting = {"kpis": ["conversion", "repurchase", "sales"], "drop": 0.2}
    AlertRule.objects.filter(key="kpi-drop").update(enabled=False, params=waiting)
    turn_on(django_apps, None)
    rule = AlertRule.objects.get(key="kpi-drop")
    assert rule.enabled
    assert rule.params == KPI_DROP_PARAMS
    AlertRule.objects.filter(key="kpi-drop").update(enabled=False, params={**waiting, "drop": 0.3})
    turn_on(django_apps, None)
    rule.refresh_from_db()
    assert not rule.enabled  # staff set their own threshold: left as they set it


def stock_stub(check: Check) -> list[Finding]:
    """Stands for a condition another app registers: here, too few events in the window."""
    recent = Event.objects.filter(received_at__gte=check.now - check.window).count()
    minimum = check.number("minimum", 10)
    return [Finding("events", recent, f"only {recent} events")] if recent < minimum else []


def test_a_condition_registered_by_another_app_drives_a_rule_that_names_it(settings):
    settings.ALERT_CONDITIONS = {"few_events": "tests.ops.test_alerts.stock_stub"}
    AlertRule.objects.update(enabled=False)
    rule = AlertRule.objects.create(
        key="few-events", name="Few events", level="yellow", condition="few_events", params={"minimum": 10}
    )
    EventFactory.create_batch(7)
    alerts_evaluate()
    assert open_alerts(rule)["events"].level == "yellow"
    EventFactory.create_batch(3)
    alerts_evaluate()
    assert resolved(rule) == ["events"]


def test_a_rule_whose_condition_is_not_registered_says_so_and_keeps_its_alerts(settings):
    settings.ALERT_CONDITIONS = {}
    AlertRule.objects.update(enabled=False)
    rule = AlertRule.objects.create(
        key="few-events", name="Few events", level="yellow", condition="few_events"
    )
    result = alerts_evaluate()
    rule.refresh_from_db()
    assert "no condition named 'few_events'" in rule.last_error
    assert result.errors == {"few-events": rule.last_error}


# -- blue ------------------------------------------------------------------------------------------


def test_a_webhook_turned_off_fires_and_resolves_when_it_is_on_again():
    rule = only("webhook-off")
    segment = Segment.objects.create(key="vip", name="VIP", kind=Segment.Kind.STATIC)
    hook = SegmentWebhook.objects.create(
        segment=segment, url="https://crm.example.com/h", secret="s", active=False, disabled_reason="410 Gone"
    )
    alerts_evaluate()
    assert "410 Gone" in open_alerts(rule)[f"webhook {hook.pk}"].summary
    SegmentWebhook.objects.filter(pk=hook.pk).update(active=True)
    alerts_evaluate()
    assert resolved(rule) == [f"webhook {hook.pk}"]


def test_a_failing_segment_rule_fires_and_resolves_once_it_computes():
    rule = only("segment-failing")
    segment = Segment.objects.create(
        key="buyers", name="Buyers", kind=Segment.Kind.DYNAMIC, rule={"nonsense": 1}
    )
    segment_compute(segment=segment)
    assert segment.error
    alerts_evaluate()
    assert set(open_alerts(rule)) == {"segment buyers"}
    segment.rule = {"aggregate": "orders", "op": "gte", "value": 1}
    segment.save()
    segment_compute(segment=segment)
    alerts_evaluate()
    assert resolved(rule) == ["segment buyers"]


def test_retention_behind_fires_until_a_run_finishes():
    rule = only("retention-behind", params={"hours": 26})
    alerts_evaluate()
    assert open_alerts(rule)["retention"].summary == "Retention is behind: never ran"
    retention_apply(dry_run=True)  # a dry run changes nothing: still behind
    alerts_evaluate()
    assert set(open_alerts(rule)) == {"retention"}
    retention_apply()
    alerts_evaluate()
    assert resolved(rule) == ["retention"]
    alerts_evaluate(now=timezone.now() + timedelta(hours=27))
    assert set(open_alerts(rule)) == {"retention"}


def test_a_table_approaching_its_limit_fires_and_resolves_when_the_limit_is_raised():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('events_event')")
        size = cursor.fetchone()[0]
    rule = only("table-size", params={"share": 0.8, "table_bytes": size + 1, "database_bytes": 0})
    alerts_evaluate()
    assert "table events_event" in open_alerts(rule)
    rule.params = {"share": 0.8, "table_bytes": size * 10, "database_bytes": 0}
    rule.save()
    alerts_evaluate()
    assert "table events_event" in resolved(rule)


# -- alerts' life: de-duplication, acknowledgement, escalation, notices ----------------------------


@pytest.fixture
def parked_rule(receiver: Receiver) -> AlertRule:
    rule = only("parked-work", escalate_after_minutes=30)
    slack = NotifyTarget.objects.create(
        name="ops-slack", kind="webhook", url=receiver.url, secret="sig-secret"
    )
    email = NotifyTarget.objects.create(name="ops-mail", kind="email", email="ops@example.com")
    NotifyTarget.objects.create(name="cto", kind="email", email="cto@example.com", escalation=True)
    rule.targets.set([slack, email])
    return rule


def park_one():
    event_park(
        event_id=EventFactory().pk, stage="identity.services.identity_resolve_events", error=ValueError("x")
    )


def test_an_alert_notifies_once_while_open_then_on_resolution(parked_rule, receiver):
    park_one()
    now = timezone.now()
    alerts_evaluate(now=now)
    alerts_evaluate(now=now + timedelta(minutes=1))
    alerts_evaluate(now=now + timedelta(minutes=2))
    alert = open_alerts(parked_rule)["parked events"]
    assert len(receiver.received) == 1  # de-duplicated while open
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]
    body = orjson.loads(receiver.received[0].body)
    assert body["text"].startswith("*[RED] Parked events or members: parked events*")
    assert verified(receiver.received[0], "sig-secret", now=timezone.now())
    parked_events_replay()
    alerts_evaluate(now=now + timedelta(minutes=3))
    alert.refresh_from_db()
    assert alert.status == "resolved"
    assert alert.resolved_by is None
    assert "RESOLVED" in orjson.loads(receiver.received[1].body)["text"]
    assert list(alert.notices.order_by("id").values_list("kind", "target__name", "ok")) == [
        ("opened", "ops-slack", True), ("opened", "ops-mail", True),
        ("resolved", "ops-slack", True), ("resolved", "ops-mail", True),
    ]  # fmt: skip


def test_an_unacknowledged_red_alert_escalates_once(parked_rule, receiver):
    park_one()
    now = timezone.now()
    alerts_evaluate(now=now)
    alerts_evaluate(now=now + timedelta(minutes=29))
    assert not Alert.objects.get(rule=parked_rule).escalated_at
    alerts_evaluate(now=now + timedelta(minutes=31))
    alerts_evaluate(now=now + timedelta(minutes=40))
    alert = Alert.objects.get(rule=parked_rule)
    assert alert.escalated_at == now + timedelta(minutes=31)
    escalated = alert.notices.filter(kind="escalated")
    assert sorted(escalated.values_list("target__name", flat=True)) == ["cto", "ops-mail", "ops-slack"]
    assert "NOT ACKNOWLEDGED" in orjson.loads(receiver.received[-1].body)["text"]


def test_an_acknowledged_alert_does_not_escalate_and_can_be_resolved_by_hand(parked_rule):
    park_one()
    now = timezone.now()
    alerts_evaluate(now=now)
    alert = Alert.objects.get(rule=parked_rule)
    oncall = UserFactory(username="oncall")
    alert_acknowledge(alert=alert, by=oncall)
    with pytest.raises(AlertStateError):
        alert_acknowledge(alert=alert, by=oncall)
    alerts_evaluate(now=now + timedelta(minutes=45))
    alert.refresh_from_db()
    assert (alert.status, alert.acknowledged_by, alert.escalated_at) == ("acknowledged", oncall, None)
    alert_resolve(alert=alert, by=oncall)
    alert.refresh_from_db()
    assert (alert.status, alert.resolved_by) == ("resolved", oncall)
    # The condition still holds: the next evaluation opens a new alert (the history keeps both).
    alerts_evaluate(now=now + timedelta(minutes=46))
    assert Alert.objects.filter(rule=parked_rule).count() == 2


def test_wecom_and_dingtalk_robots_get_their_own_json_and_dingtalk_its_signed_url(receiver):
    rule = only("retention-behind")
    wecom = NotifyTarget.objects.create(name="wecom", kind="webhook", url=receiver.url, flavor="wecom")
    ding = NotifyTarget.objects.create(
        name="ding", kind="webhook", url=receiver.url, flavor="dingtalk", secret="SECabc"
    )
    rule.targets.set([wecom, ding])
    alerts_evaluate()
    by_flavor = {
        orjson.loads(r.body)["msgtype"] + ("+sign" if "sign=" in r.path else ""): r for r in receiver.received
    }
    assert set(by_flavor) == {"markdown", "markdown+sign"}
    wecom_body = orjson.loads(by_flavor["markdown"].body)
    assert wecom_body["markdown"]["content"].startswith("**[BLUE] Retention jobs behind: retention**")
    signed = by_flavor["markdown+sign"]
    query = parse_qs(urlsplit(signed.path).query)
    mac = hmac.new(b"SECabc", f"{query['timestamp'][0]}\nSECabc".encode(), hashlib.sha256).digest()
    assert query["sign"][0] == base64.b64encode(mac).decode()
    assert orjson.loads(signed.body)["markdown"]["title"] == "[BLUE] Retention jobs behind: retention"


def test_a_failed_notice_is_recorded_and_the_alert_still_opens(receiver):
    rule = only("retention-behind")
    receiver.default = 500
    rule.targets.set([NotifyTarget.objects.create(name="down", kind="webhook", url=receiver.url)])
    alerts_evaluate()
    notice = AlertNotice.objects.get()
    assert (notice.ok, notice.error) == (False, "HTTP 500")
    assert open_alerts(rule)["retention"]


def test_a_broken_rule_does_not_stop_the_others():
    only("retention-behind")
    broken = AlertRule.objects.create(
        key="broken", name="Broken", level="blue", condition="parked", params={"threshold": "x"}
    )
    result = alerts_evaluate()
    assert "params.threshold must be a number" in result.errors["broken"]
    assert Alert.objects.filter(rule__key="retention-behind").exists()
    assert not Alert.objects.filter(rule=broken).exists()


def test_the_command_evaluates_without_a_broker(settings):
    """What cron runs when beat cannot reach the workers: the broker rule fires from it."""
    from django.core.management import call_command

    rule = only("services-unreachable")
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    out = StringIO()
    with TestCase.captureOnCommitCallbacks(execute=True):
        call_command("alerts_evaluate", stdout=out)
    assert out.getvalue().strip() == "opened 1, resolved 0, escalated 0"
    assert set(open_alerts(rule)) == {"broker"}


@pytest.mark.django_db(transaction=True)
def test_with_the_database_away_the_command_tells_the_outage_targets_once_then_its_return(
    settings, tmp_path, receiver
):
    from django.core.management import CommandError, call_command
    from django.db import connections

    settings.ALERT_OUTAGE_EMAILS = ["oncall@example.com"]
    settings.ALERT_OUTAGE_WEBHOOK_URLS = [receiver.url]
    settings.ALERT_OUTAGE_STATE_FILE = str(tmp_path / "outage.json")
    connection = connections["default"]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = "1"  # nothing listens there: refused, as a stopped server
    try:
        for _ in range(2):  # the second run, within the repeat interval, says nothing new
            with pytest.raises(CommandError, match="database is unreachable"):
                call_command("alerts_evaluate")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert [m.subject for m in mail.outbox] == ["[RED] Database unreachable"]
    assert len(receiver.received) == 1
    assert orjson.loads(receiver.received[0].body)["text"].startswith("*[RED] Database unreachable*")
    call_command("alerts_evaluate", stdout=StringIO())
    assert [m.subject for m in mail.outbox][-1] == "[RED] RESOLVED: Database unreachable"
    call_command("alerts_evaluate", stdout=StringIO())
    assert len(mail.outbox) == 2  # told once that it is over
