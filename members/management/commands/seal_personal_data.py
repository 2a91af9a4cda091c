"""Seal the phones, emails and names stored in the clear, or seal everything again under the
current key (README, "Personal data at rest")."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cdp.vault import sealer
from identity.sealing import identifiers_seal, records_seal
from members.sealing import traits_seal


class Command(BaseCommand):
    help = (
        "Seal phones, emails and names stored in the clear (identifiers, merge and split records, "
        "traits); --rotate seals again, under the first key of PRIVACY_SEALING_KEYS, what an older key sealed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rotate", action="store_true", help="also seal again what another key sealed")
        parser.add_argument("--batch-size", type=int, default=5_000)

    def handle(self, *args: Any, rotate: bool, batch_size: int, **options: Any) -> None:
        self.stdout.write(f"sealing under key {sealer().keys.current!r}")
        identifiers = identifiers_seal(
            batch_size=batch_size, rotate=rotate, progress=self._progress("identifiers")
        )
        records = records_seal(batch_size=batch_size, rotate=rotate)
        traits = traits_seal(batch_size=batch_size, rotate=rotate, progress=self._progress("traits"))
        self.stdout.write(
            f"sealed {identifiers} identifiers, {traits} traits; {records} merge and split records name "
            "phones and emails by their index, and sealed reasons, now"
        )

    def _progress(self, what: str) -> Any:
        return lambda done: self.stdout.write(f"  {what}: {done}")
