"""The console's import page: the jobs with their progress, counts and problems, and (for the
administrator) a form to upload a file and start one. While a job runs the page reloads itself
every few seconds: no script, nothing from another host."""

from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path

from cdp.permissions import request_staff
from cdp.scopes import request_scope
from members.imports.api import RUN, VIEW, _kept
from members.imports.mapping import MappingInvalid, mapping_text_read
from members.imports.models import ImportJob, ImportProblem
from members.imports.services import import_job_create
from members.imports.tasks import run_job_enqueue

PAGE = 50
ACTIVE = (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)


def _unscoped(request: HttpRequest) -> None:
    if not request_scope(request).unrestricted:  # a job covers every store and channel
        raise PermissionDenied("Open to unscoped accounts only.")


def _progress(job: ImportJob) -> int:
    return int(job.progress * 100)


@login_required
@permission_required(VIEW, raise_exception=True)
def imports(request: HttpRequest) -> HttpResponse:
    _unscoped(request)
    if request.method == "POST":
        return _start(request)
    jobs = list(ImportJob.objects.order_by("-id")[:PAGE])
    return render(
        request,
        "imports/jobs.html",
        {
            "jobs": [(job, _progress(job)) for job in jobs],
            "kinds": ImportJob.Kind.values,
            "may_run": request.user.has_perm(RUN),
            "refresh": any(job.status in ACTIVE for job in jobs),
        },
    )


def _start(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(RUN):
        raise PermissionDenied("Your role does not allow this (imports.run_import).")
    kind, name = request.POST.get("kind", ""), request.POST.get("name", "").strip() or "legacy"
    upload = request.FILES.get("file")
    problem = ""
    mapping: dict = {}
    if kind not in ImportJob.Kind.values:
        problem = "kind: choose what the file holds"
    elif upload is None:
        problem = "file: choose a file"
    else:
        try:
            mapping = (
                mapping_text_read(request.POST.get("mapping", ""), name="")
                if request.POST.get("mapping", "").strip()
                else {}
            )
        except MappingInvalid as exc:
            problem = f"mapping: {exc}"
    if problem:
        messages.error(request, problem)
        return redirect("console:imports")
    assert upload is not None  # refused above
    kept: Path = _kept(upload)
    try:
        with transaction.atomic():
            job, created = import_job_create(
                kind=kind, name=name, path=kept, file_name=upload.name or kept.name, mapping=mapping,
                dry_run=request.POST.get("dry_run") == "on", user=request_staff(request), channel="console",
            )  # fmt: skip
            if not created:
                kept.unlink(missing_ok=True)
            if job.status == ImportJob.Status.QUEUED:
                run_job_enqueue(job.pk)
    except ValidationError as exc:
        kept.unlink(missing_ok=True)
        messages.error(request, "; ".join(f"{f}: {', '.join(m)}" for f, m in exc.message_dict.items()))
        return redirect("console:imports")
    if not created:
        messages.info(request, f"This file was imported as job {job.pk} already; nothing is imported twice.")
    return redirect("console:import", job_id=job.pk)


@login_required
@permission_required(VIEW, raise_exception=True)
def import_job(request: HttpRequest, job_id: int) -> HttpResponse:
    _unscoped(request)
    job = get_object_or_404(ImportJob, pk=job_id)
    problems = ImportProblem.objects.filter(job=job).order_by("id")[:PAGE]
    return render(
        request,
        "imports/job.html",
        {"job": job, "progress": _progress(job), "problems": problems, "refresh": job.status in ACTIVE},
    )


urlpatterns = [
    path("imports/", imports, name="imports"),
    path("imports/<int:job_id>/", import_job, name="import"),
]
