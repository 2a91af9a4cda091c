"""Writing import files and running them, for the imports tests."""

import csv
import io
from pathlib import Path
from typing import Any

from events.pipeline import events_process_pending
from members.imports.models import ImportJob
from members.imports.services import Report, import_job_create, import_run


def csv_file(path: Path, rows: list[dict[str, Any]], *, encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def run_import(
    kind: str, path: Path, *, name: str = "crm", dry_run: bool = False, batch_size: int = 2000, **kwargs: Any
) -> tuple[ImportJob, Report]:
    job, _ = import_job_create(kind=kind, name=name, path=path, dry_run=dry_run, save=not dry_run, **kwargs)
    report = import_run(job=job, batch_size=batch_size)
    return job, report


def drain() -> None:
    while events_process_pending()[1]:
        pass
