"""The import page in a real browser (Debian's Chromium through Playwright): an administrator
uploads a legacy GB18030 file with its mapping, follows the job's progress (one stopped halfway,
one done) and reads its problems; a CRM manager sees the jobs without the upload form. Every
page loads only from the test server; screenshots go with the console's others."""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from cdp.roles import Role
from members.imports import services
from members.imports.models import ImportJob
from members.imports.tasks import run_job
from tests.members.test_console_browser import Console, Traffic, staff

pytestmark = pytest.mark.django_db(transaction=True)

DEMO = Path(__file__).resolve().parents[3] / "members" / "imports" / "demo"


def test_an_administrator_uploads_a_legacy_file_and_follows_its_job(
    live_server,
    browser,
    screenshots,
    settings,
    tmp_path,
    monkeypatch,
):
    settings.IMPORT_DIR = tmp_path
    sent: list[int] = []
    monkeypatch.setattr(
        "members.imports.tasks.enqueue_on_commit", lambda task, job_id, fallback: sent.append(job_id)
    )
    staff("importer", Role.ADMIN)
    staff("manager", Role.CRM_MANAGER)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "imports")
    page = console.log_in("importer")
    page.get_by_role("link", name="Imports").click()
    expect(page.get_by_text("No imports yet.")).to_be_visible()
    form = page.get_by_role("form", name="Import a file")
    form.get_by_label("What it holds").select_option("members")
    form.get_by_label("Import name").fill("oldpos")
    form.get_by_label("File").set_input_files(str(DEMO / "members.gb18030.csv"))
    form.get_by_label("Column mapping").fill((DEMO / "members.mapping.yaml").read_text(encoding="utf-8"))
    console.shot("01-upload-form")
    form.get_by_role("button", name="Start import").click()
    expect(page).to_have_url(re.compile(r"/console/imports/\d+/$"))
    (job_id,) = sent
    expect(page.get_by_text("queued")).to_be_visible()
    console.shot("02-queued")

    # The worker gets halfway and dies: the page shows how far it got (and reloads itself).
    def dies_after_two_batches(job):
        if job.checkpoint >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        services.import_run(
            job=ImportJob.objects.get(pk=job_id), batch_size=2, progress=dies_after_two_batches
        )
    page.reload()
    progress = int(page.get_by_label("Progress", exact=True).get_attribute("value") or 0)
    assert 0 < progress < 100
    expect(page.get_by_text("running")).to_be_visible()
    console.shot("03-stopped-halfway", full_page=False)

    run_job(job_id)  # sent again (beat's sweep), it resumes at its checkpoint
    page.reload()
    expect(page.get_by_label("Progress", exact=True)).to_have_attribute("value", "100")
    counts = page.get_by_test_id("import-counts")
    expect(counts).to_contain_text("imported")
    problems = page.get_by_test_id("import-problems")
    expect(problems).to_contain_text("is not a time")
    console.shot("04-done-with-problems")
    page.get_by_role("link", name="Imports").click()
    expect(page.get_by_test_id("import-jobs")).to_contain_text("members.gb18030.csv")
    console.shot("05-jobs")
    console.close()

    manager = Console(browser, live_server.url, traffic, screenshots, "imports-manager")
    page = manager.log_in("manager")
    manager.open("/console/imports/")
    expect(page.get_by_test_id("import-jobs")).to_contain_text("succeeded")
    expect(page.get_by_role("form", name="Import a file")).to_have_count(0)
    manager.shot("01-jobs")
    manager.close()
    job = ImportJob.objects.get(pk=job_id)
    assert (job.status, job.rows_imported + job.rows_skipped) == ("succeeded", job.checkpoint)
    traffic.assert_clean()
