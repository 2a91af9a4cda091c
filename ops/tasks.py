"""Celery tasks of operations: the beat job that evaluates the alert rules."""

from celery import shared_task

from ops.services import alerts_evaluate


@shared_task(name="ops.alerts_evaluate", ignore_result=True)
def alerts_evaluate_task() -> int:
    """Evaluate every enabled rule; idempotent (an open alert is not opened or sent twice)."""
    result = alerts_evaluate()
    return len(result.opened) + len(result.resolved) + len(result.escalated)
