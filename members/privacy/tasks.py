"""Celery tasks of the privacy app: thin wrappers over its services."""

from celery import shared_task

from members.privacy.retention import retention_apply
from members.privacy.services import erasure_enqueue, erasure_run, erasures_pending


@shared_task(name="privacy.erasure_run", acks_late=True, ignore_result=True)
def erasure_run_task(request_id: int) -> str:
    """Carry out one erasure request; idempotent (a request done is left as it is)."""
    return erasure_run(request_id=request_id).status


@shared_task(name="privacy.erasures_sweep", ignore_result=True)
def erasures_sweep() -> int:
    """The reconciler of erasure requests: nudges the ones still received (a lost nudge, a
    worker that was down). Returns how many."""
    pending = erasures_pending()
    for request_id in pending:
        erasure_enqueue(request_id)
    return len(pending)


@shared_task(name="privacy.retention_apply", ignore_result=True)
def retention_apply_task() -> dict[str, int]:
    """Apply every retention period (nightly); idempotent: what is done is not due any more."""
    return retention_apply().counts
