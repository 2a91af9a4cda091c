"""Evaluating the alert rules, and what staff do with alerts (acknowledge, resolve).

``alerts_evaluate`` (beat, every ``ALERT_EVALUATE_INTERVAL_SECONDS``; or ``manage.py
alerts_evaluate``) first counts the traffic that arrived (``ops.traffic``), then checks each
enabled rule: a finding without an open alert opens one and notifies; one with an open alert
only updates it (de-duplicated: no new notice while it stays open); an open alert whose
subject no longer has a finding resolves by itself and notifies. A rule whose condition fails
keeps its alerts as they are and records the error. Red alerts nobody acknowledged within their
rule's ``escalate_after_minutes`` are sent again, to the escalation targets too, once.

Each rule is evaluated in its own transaction under an advisory lock on the rule, so two
evaluations at once never open one alert twice; notices are sent after the commit, outside any
lock, and recorded with what the target answered.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from cdp.alerting import Check, Finding
from ops.conditions import conditions
from ops.models import Alert, AlertNotice, AlertRule, Level, NotifyTarget
from ops.notify import Message, notify
from ops.traffic import traffic_count

logger = logging.getLogger(__name__)

_RULE_LOCK = 7_419_001  # the advisory lock class of alert rules (the rule's id is the key)


@dataclass
class Evaluation:
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class AlertStateError(ValueError):
    """The alert is not in a state that allows this (acknowledging a resolved one)."""


def alerts_evaluate(*, now: datetime | None = None) -> Evaluation:
    now = now or timezone.now()
    result = Evaluation()
    traffic_count(now=now)
    registry = conditions()
    for rule in AlertRule.objects.filter(enabled=True).order_by("id"):
        condition = registry.get(rule.condition)
        try:
            if condition is None:
                raise LookupError(f"no condition named {rule.condition!r} is registered")
            findings = condition(
                Check(params=rule.params, window=timedelta(minutes=rule.window_minutes), now=now)
            )
        except Exception as exc:  # a broken rule must not stop the others
            logger.warning("Alert rule %s could not be evaluated: %s", rule.key, exc)
            result.errors[rule.key] = f"{type(exc).__name__}: {exc}"[:2000]
            AlertRule.objects.filter(pk=rule.pk).update(
                last_evaluated_at=now, last_error=result.errors[rule.key]
            )
            continue
        if findings is None:  # it cannot tell now: the rule's alerts stay as they are
            AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_error="")
            continue
        _rule_apply(rule, findings, now, result)
    _escalate(now, result)
    return result


def _rule_apply(rule: AlertRule, findings: list[Finding], now: datetime, result: Evaluation) -> None:
    by_subject = {finding.subject[:200]: finding for finding in findings}
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_RULE_LOCK, rule.pk])
        open_alerts = {
            alert.subject: alert
            for alert in Alert.objects.select_for_update()
            .filter(rule=rule)
            .exclude(status=Alert.Status.RESOLVED)
        }
        for subject, finding in by_subject.items():
            alert = open_alerts.get(subject)
            if alert is None:
                alert = Alert.objects.create(
                    rule=rule, level=rule.level, subject=subject, value=finding.value,
                    summary=finding.summary[:500], opened_at=now, last_seen_at=now,
                )  # fmt: skip
                result.opened.append(alert.pk)
                transaction.on_commit(partial(_notify, alert.pk, AlertNotice.Kind.OPENED))
            else:
                alert.value, alert.summary, alert.last_seen_at = finding.value, finding.summary[:500], now
                alert.save(update_fields=["value", "summary", "last_seen_at"])
        for subject, alert in open_alerts.items():
            if subject not in by_subject:
                alert.status, alert.resolved_at = Alert.Status.RESOLVED, now
                alert.save(update_fields=["status", "resolved_at"])
                result.resolved.append(alert.pk)
                transaction.on_commit(partial(_notify, alert.pk, AlertNotice.Kind.RESOLVED))
        AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_error="")


def _escalate(now: datetime, result: Evaluation) -> None:
    due = list(
        Alert.objects.filter(
            status=Alert.Status.OPEN, level=Level.RED, escalated_at__isnull=True
        ).select_related("rule")
    )
    for alert in due:
        if alert.opened_at + timedelta(minutes=alert.rule.escalate_after_minutes) > now:
            continue
        # Only the evaluation that marks it escalates it (two at once: one wins the update).
        if Alert.objects.filter(pk=alert.pk, status=Alert.Status.OPEN, escalated_at__isnull=True).update(
            escalated_at=now
        ):
            result.escalated.append(alert.pk)
            _notify(alert.pk, AlertNotice.Kind.ESCALATED)


def _message(alert: Alert, kind: str) -> Message:
    rule = alert.rule
    head = {"opened": "", "escalated": "NOT ACKNOWLEDGED: ", "resolved": "RESOLVED: "}[kind]
    lines = [
        alert.summary,
        f"Rule: {rule.name} ({rule.key}), level {alert.level}",
        f"Subject: {alert.subject}; value {alert.value:g}",
        f"Opened {alert.opened_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if alert.resolved_at:
        by = (
            alert.resolved_by.get_username()
            if alert.resolved_by
            else "itself (the condition stopped holding)"
        )
        lines.append(f"Resolved {alert.resolved_at:%Y-%m-%d %H:%M:%S} UTC by {by}")
    return Message(title=f"[{alert.level.upper()}] {head}{rule.name}: {alert.subject}", text="\n".join(lines))


def _notify(alert_id: int, kind: str) -> None:
    alert = Alert.objects.select_related("rule", "resolved_by").get(pk=alert_id)
    targets = list(alert.rule.targets.filter(enabled=True))
    if kind == AlertNotice.Kind.ESCALATED:
        targets += [t for t in NotifyTarget.objects.filter(enabled=True, escalation=True) if t not in targets]
    message = _message(alert, kind)
    for target in targets:
        error = notify(target, message)
        if error:
            logger.warning("Alert %s: notice %s to %s failed: %s", alert.pk, kind, target.name, error)
        AlertNotice.objects.create(
            alert=alert, target=target, kind=kind, at=timezone.now(), ok=not error, error=error
        )


def alert_acknowledge(*, alert: Alert, by: User) -> Alert:
    """Someone is on it: no escalation from now on. Only an open alert can be acknowledged."""
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if locked.status != Alert.Status.OPEN:
            raise AlertStateError(f"the alert is {locked.status}, not open")
        locked.status, locked.acknowledged_at, locked.acknowledged_by = (
            Alert.Status.ACKNOWLEDGED,
            timezone.now(),
            by,
        )
        locked.save(update_fields=["status", "acknowledged_at", "acknowledged_by"])
    return locked


def alert_resolve(*, alert: Alert, by: User) -> Alert:
    """Closed by hand (if the condition still holds, the next evaluation opens a new alert)."""
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if locked.status == Alert.Status.RESOLVED:
            raise AlertStateError("the alert is resolved already")
        locked.status, locked.resolved_at, locked.resolved_by = Alert.Status.RESOLVED, timezone.now(), by
        locked.save(update_fields=["status", "resolved_at", "resolved_by"])
        transaction.on_commit(lambda: _notify(locked.pk, AlertNotice.Kind.RESOLVED))
    return locked
