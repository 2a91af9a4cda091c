"""The imports API and console page: an upload starts a job a worker runs; its status, counts,
progress and problems; who may do what."""

import gzip

import pytest
from django.test import Client

from cdp.models import AuditEntry
from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.models import Event
from members.imports.models import ImportJob
from members.imports.tasks import resume_stalled, run_job
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db

ORDERS = (
    b"order_id,member_id,channel,store,total,completed_at\n"
    b"O1,M1,pos,S1,100,2024-01-01\n"
    b"O2,M1,pos,,100,2024-01-01\n"
    b"O3,M2,web,,50,2024-01-02\n"
)


@pytest.fixture
def nudged(monkeypatch):
    """The jobs a request sent to the worker (run here, as the worker would, by the test)."""
    sent: list[int] = []
    monkeypatch.setattr(
        "members.imports.tasks.enqueue_on_commit", lambda task, job_id, fallback: sent.append(job_id)
    )
    return sent


def _upload(client, body=ORDERS, name="orders.csv.gz", **fields):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {
        "kind": "orders",
        "name": "crm",
        "file": SimpleUploadedFile(name, gzip.compress(body, mtime=0)),
        **fields,
    }
    return client.post("/api/v1/imports/", data, format="multipart")


def test_an_upload_starts_a_job_that_a_worker_runs(
    settings, tmp_path, nudged, django_capture_on_commit_callbacks
):
    settings.IMPORT_DIR = tmp_path
    admin = staff_client(Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(admin)
    assert response.status_code == 202, response.content
    job = response.json()
    assert (job["status"], job["kind"], job["progress"], job["file_name"]) == (
        "queued",
        "orders",
        0.0,
        "orders.csv.gz",
    )
    assert nudged == [job["id"]]
    (started,) = AuditEntry.objects.filter(action=AuditEntry.Action.START_IMPORT)
    assert (started.actor, started.channel) == (f"staff-{Role.ADMIN}", "api")
    assert started.detail.startswith(f"import job {job['id']}: orders of crm, ")
    (kept,) = tmp_path.iterdir()
    run_job(job["id"])
    assert not kept.exists()  # the upload is gone once its job is done
    done = admin.get(f"/api/v1/imports/{job['id']}/").json()
    assert (done["status"], done["progress"], done["rows_imported"], done["rows_skipped"], done["line"]) == (
        "succeeded", 1.0, 2, 1, 4
    )  # fmt: skip
    problems = admin.get(f"/api/v1/imports/{job['id']}/problems/").json()
    assert problems["results"] == [
        {"id": problems["results"][0]["id"], "record": 2, "line": 3, "field": "store", "reason": "a pos order needs its store", "skipped": True}
    ]  # fmt: skip
    assert Event.objects.filter(message_id__startswith="import:order:").count() == 2
    # The same file again: its job, not a second import.
    again = _upload(admin)
    assert (again.status_code, again.json()["id"]) == (200, job["id"])
    assert admin.get("/api/v1/imports/").json()["results"][0]["id"] == job["id"]


def test_a_bad_upload_names_its_field(settings, tmp_path, nudged):
    settings.IMPORT_DIR = tmp_path
    admin = staff_client(Role.ADMIN)
    response = _upload(admin, kind="pets")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "kind"
    response = _upload(admin, mapping="columns: [1]")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "mapping", "reason": "columns: must map each column name to a field name"}
    ]
    assert nudged == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("role", "read", "start"),
    [
        (None, 401, 401),
        (Role.CRM_AGENT, 403, 403),
        (Role.CRM_MANAGER, 200, 403),
        (Role.MARKETING, 403, 403),
        (Role.ADMIN, 200, 202),
    ],
)
def test_who_may_follow_and_start_imports(settings, tmp_path, nudged, role, read, start):
    settings.IMPORT_DIR = tmp_path
    client = staff_client(role)
    assert client.get("/api/v1/imports/").status_code == read
    assert _upload(client).status_code == start


def test_a_job_whose_worker_died_is_sent_again_and_resumes(settings, tmp_path, nudged):
    from datetime import timedelta

    from django.utils import timezone

    settings.IMPORT_DIR = tmp_path
    job_id = _upload(staff_client(Role.ADMIN)).json()["id"]
    ImportJob.objects.filter(pk=job_id).update(
        status="running", updated_at=timezone.now() - timedelta(hours=1)
    )
    nudged.clear()
    assert resume_stalled() == 1
    assert nudged == [job_id]


def test_the_console_page_shows_progress_and_problems(settings, tmp_path, nudged):
    settings.IMPORT_DIR = tmp_path
    job_id = _upload(staff_client(Role.ADMIN)).json()["id"]
    run_job(job_id)
    manager = Client()
    manager.force_login(staff_user_ensure(username="manager", role=Role.CRM_MANAGER))
    page = manager.get("/console/imports/").content.decode()
    assert 'value="100"' in page
    assert "orders.csv.gz" in page
    assert "Start import" not in page  # the manager follows; only the administrator starts
    detail = manager.get(f"/console/imports/{job_id}/").content.decode()
    assert "a pos order needs its store" in detail
    assert manager.post("/console/imports/", {"kind": "orders"}).status_code == 403
