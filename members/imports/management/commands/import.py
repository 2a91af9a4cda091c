"""``python manage.py import KIND FILE``: import a legacy system's history (members.imports)."""

import getpass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from members.imports.mapping import MappingInvalid, mapping_file_read
from members.imports.models import ImportJob
from members.imports.reading import FileUnreadable
from members.imports.services import (
    BATCH_SIZE,
    ImportConflict,
    Report,
    import_job_create,
    import_run,
    imported_resolve,
)

#: Problems printed in full; the rest are counted (a job keeps up to 10,000 for the API).
SHOWN_PROBLEMS = 50


class Command(BaseCommand):
    help = (
        "Import a file of KIND (members, orders, refunds, balances, tiers, coupons): CSV or NDJSON, "
        "UTF-8 or GB18030, gzipped or not. Running the same file again changes nothing; a run that "
        "was stopped continues where it stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=ImportJob.Kind.values)
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--name",
            default="legacy",
            help="The import's name (the legacy system); the same for all its files.",
        )
        parser.add_argument(
            "--mapping", type=Path, help="A column mapping (YAML or JSON) for a legacy layout."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Check every row and report; write nothing."
        )
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")
        parser.add_argument(
            "--resolve",
            action="store_true",
            help="Then resolve and refresh every waiting event here (resolution of all first, then one "
            "refresh per member), instead of leaving them to the workers.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            raw_mapping = mapping_file_read(options["mapping"]) if options["mapping"] else {}
        except (MappingInvalid, OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"mapping: {exc}") from exc
        dry_run = options["dry_run"]
        job, created = import_job_create(
            kind=options["kind"],
            name=options["name"],
            path=path.resolve(),
            mapping=raw_mapping,
            dry_run=dry_run,
            channel="cli",
            operator=getpass.getuser(),
            save=not dry_run,
        )
        if not created and job.status == ImportJob.Status.SUCCEEDED:
            self.stdout.write(f"{path} was imported already (job {job.pk}): {_counts(job)}. Nothing to do.")
            self._resolve(options)
            return
        if not created:
            self.stdout.write(f"Resuming job {job.pk} after record {job.checkpoint} (line {job.line}).")
        report = Report()
        bar = tqdm(
            total=job.lines_total,
            initial=job.line,
            unit=" lines",
            unit_scale=True,
            desc=f"{options['kind']}{' (dry run)' if dry_run else ''}",
            disable=options["no_progress"],
            file=self.stderr._out,
        )
        rows_at_start = job.rows_done

        def progress(current: ImportJob) -> None:
            bar.update(current.line - bar.n)
            rate = (current.rows_done - rows_at_start) / max(bar.format_dict["elapsed"], 1e-6)
            bar.set_postfix(rows=current.rows_done, rows_per_s=f"{rate:,.0f}", skipped=current.rows_skipped)

        try:
            import_run(job=job, progress=progress, batch_size=options["batch_size"], report=report)
        except FileUnreadable as exc:
            raise CommandError(f"{path}: {exc}") from exc
        except ImportConflict as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        for problem in report.problems[:SHOWN_PROBLEMS]:
            what = "skipped" if problem.skipped else "warning"
            self.stdout.write(f"line {problem.line}: {problem.field or '(row)'}: {problem.reason} [{what}]")
        if len(report.problems) > SHOWN_PROBLEMS:
            self.stdout.write(f"… and {len(report.problems) - SHOWN_PROBLEMS} more problems")
        if not dry_run:
            self._resolve(options)
        verb = "would import" if dry_run else "imported"
        self.stdout.write(
            f"{verb} {report.imported}, already there {report.duplicate}, skipped {report.skipped}, "
            f"warnings {report.warnings}" + ("" if dry_run else f" (job {job.pk})")
        )

    def _resolve(self, options: dict[str, Any]) -> None:
        if options["resolve"]:
            self.stdout.write("Resolving and refreshing the imported events…")
            resolved, refreshed = imported_resolve()
            self.stdout.write(f"resolved {resolved} events; refresh work done: {refreshed}")


def _counts(job: ImportJob) -> str:
    return f"{job.rows_imported} imported, {job.rows_duplicate} already there, {job.rows_skipped} skipped"
