"""Imports API under /api/v1/imports/: upload a file to start a job, follow it, read its problems.

Who (``cdp.roles``): starting an import is the administrator's (``imports.run_import``): a job
writes members, orders, points and coupons of every store and channel at once, beyond any
staff scope, and creates coupon campaigns. Following jobs and reading their problems is also
the CRM manager's (``imports.view_importjob``, unscoped): the manager answers members asking
where their carried-over points or tier went, and already sees members' contact details in
full, which a problem may quote (a phone that is not one).
"""

import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError
from cdp.pagination import page_serializer, paginated
from cdp.permissions import Unscoped, permissions_required, request_staff
from cdp.schema import error_response
from members.imports.mapping import MappingInvalid, mapping_text_read
from members.imports.models import ImportJob, ImportProblem
from members.imports.services import import_job_create
from members.imports.tasks import run_job_enqueue

VIEW, RUN = "imports.view_importjob", "imports.run_import"
_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class ImportJobOutput(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(help_text="0 to 1: how far into the file (its lines).")
    rows_done = serializers.IntegerField(read_only=True)

    class Meta:
        model = ImportJob
        fields = (
            "id", "kind", "name", "file_name", "size", "dry_run", "status", "progress", "checkpoint", "line", "lines_total",
            "rows_done", "rows_imported", "rows_duplicate", "rows_skipped", "warnings", "error",
            "created_at", "started_at", "finished_at", "updated_at",
        )  # fmt: skip

    def get_progress(self, job: ImportJob) -> float:
        if job.status == ImportJob.Status.SUCCEEDED:
            return 1.0
        return round(job.progress, 4)


class ImportProblemOutput(serializers.ModelSerializer):
    class Meta:
        model = ImportProblem
        fields = ("id", "record", "line", "field", "reason", "skipped")


class ImportStartInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ImportJob.Kind.values)
    file = serializers.FileField(help_text="CSV or NDJSON, UTF-8 or GB18030, gzipped or not.")
    name = serializers.RegexField(_NAME, default="legacy", help_text="The import's name (the legacy system).")
    mapping = serializers.CharField(
        required=False, allow_blank=True, help_text="A column mapping, as YAML or JSON text."
    )
    dry_run = serializers.BooleanField(default=False)


class _ByMethod(BasePermission):
    """Reading needs the view permission; starting a job the run permission. Unscoped either way."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        needed = (VIEW,) if request.method in ("GET", "HEAD", "OPTIONS") else (RUN,)
        return bool(permissions_required(*needed)().has_permission(request, view))


def _kept(upload: UploadedFile) -> Path:
    """The uploaded file, kept where the workers read it until its job is done."""
    directory = Path(settings.IMPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    name = Path(upload.name or "upload").name[-100:]
    path = directory / f"{uuid.uuid4().hex}-{name}"
    with path.open("wb") as target:
        for chunk in upload.chunks(1 << 20):
            target.write(chunk)
    return path


@extend_schema(tags=["imports"])
class ImportJobsView(APIView):
    permission_classes = (_ByMethod, Unscoped)

    @extend_schema(operation_id="api_v1_imports_list", responses={200: page_serializer(ImportJobOutput)})
    def get(self, request: Request) -> Response:
        """Import jobs, newest first."""
        return paginated(
            request,
            self,
            ImportJob.objects.all(),
            ordering="-id",
            serialize=lambda page: ImportJobOutput(page, many=True).data,
            max_page_size=200,
        )

    @extend_schema(
        request={"multipart/form-data": ImportStartInput},
        responses={202: ImportJobOutput, 200: ImportJobOutput, 400: error_response("invalid_import")},
    )
    def post(self, request: Request) -> Response:
        """Upload a file and start importing it (a worker runs the job). The same file of the same
        kind and name again answers 200 with its job (resumed if it had stopped), not a second
        import."""
        given = ImportStartInput(data=request.data)
        if not given.is_valid():
            raise ApiError(
                code="invalid_import",
                message="The import request is incomplete or malformed.",
                errors=[FieldError(f, str(e[0])) for f, e in given.errors.items()],
            )
        data = given.validated_data
        if data["file"].size > settings.IMPORT_MAX_UPLOAD_BYTES:
            raise ApiError(
                code="invalid_import",
                message="The file is too large.",
                errors=[FieldError("file", f"at most {settings.IMPORT_MAX_UPLOAD_BYTES:,} bytes")],
            )
        try:
            mapping = mapping_text_read(data.get("mapping") or "", name="") if data.get("mapping") else {}
        except MappingInvalid as exc:
            raise ApiError(
                code="invalid_import",
                message="The mapping cannot be used.",
                errors=[FieldError("mapping", str(exc))],
            ) from exc
        path = _kept(data["file"])
        try:
            with transaction.atomic():
                job, created = import_job_create(
                    kind=data["kind"],
                    name=data["name"],
                    path=path,
                    file_name=data["file"].name,
                    mapping=mapping,
                    dry_run=data["dry_run"],
                    user=request_staff(request),
                    channel="api",
                )
                if not created:
                    path.unlink(missing_ok=True)  # the job reads the copy it kept
                    if job.status == ImportJob.Status.FAILED:
                        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.QUEUED, error="")
                        job.refresh_from_db()
                if job.status == ImportJob.Status.QUEUED:
                    run_job_enqueue(job.pk)
        except ValidationError as exc:
            path.unlink(missing_ok=True)
            raise ApiError(code="invalid_import", message="The import cannot be started.",
                           errors=[FieldError(f, "; ".join(m)) for f, m in exc.message_dict.items()]) from exc  # fmt: skip
        return Response(
            ImportJobOutput(job).data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )


@extend_schema(tags=["imports"])
class ImportJobView(APIView):
    permission_classes = (permissions_required(VIEW), Unscoped)

    @extend_schema(responses={200: ImportJobOutput})
    def get(self, request: Request, job_id: int) -> Response:
        """A job: its status, counts and progress."""
        job = ImportJob.objects.filter(pk=job_id).first()
        if job is None:
            raise ApiError(
                code="not_found", message="No such import job.", status_code=status.HTTP_404_NOT_FOUND
            )
        return Response(ImportJobOutput(job).data)


@extend_schema(tags=["imports"])
class ImportProblemsView(APIView):
    permission_classes = (permissions_required(VIEW), Unscoped)

    @extend_schema(responses={200: page_serializer(ImportProblemOutput)})
    def get(self, request: Request, job_id: int) -> Response:
        """The rows of a job's file that were skipped (or imported with a value unused): line,
        field and reason, in file order (the first 10,000; the job counts them all)."""
        if not ImportJob.objects.filter(pk=job_id).exists():
            raise ApiError(
                code="not_found", message="No such import job.", status_code=status.HTTP_404_NOT_FOUND
            )
        return paginated(
            request,
            self,
            ImportProblem.objects.filter(job_id=job_id),
            ordering="id",
            serialize=lambda page: ImportProblemOutput(page, many=True).data,
        )
