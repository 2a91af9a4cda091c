"""Celery tasks of imports: thin wrappers over the services."""

from celery import shared_task

from cdp.tasks import enqueue_on_commit
from members.imports.services import import_job_run, import_jobs_resume_stalled


@shared_task(name="imports.run_job", acks_late=True, ignore_result=True)
def run_job(job_id: int) -> None:
    """Run (or resume) an import job; idempotent: a finished job does nothing, a job another
    worker is running stops at its next commit (``ImportConflict``), and every row has a key."""
    import_job_run(job_id=job_id)


@shared_task(name="imports.resume_stalled", ignore_result=True)
def resume_stalled() -> int:
    """The reconciler of import jobs: queued jobs whose nudge was lost, and running jobs whose
    worker died (no commit for ``IMPORT_STALLED_SECONDS``), are sent again; they resume at
    their checkpoint."""
    job_ids = import_jobs_resume_stalled()
    for job_id in job_ids:
        run_job_enqueue(job_id)
    return len(job_ids)


def run_job_enqueue(job_id: int) -> None:
    enqueue_on_commit(run_job, job_id, fallback="the sweep of stalled import jobs")
