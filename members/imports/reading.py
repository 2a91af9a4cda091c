"""Reading an import file: gzip or not (told by its first bytes), UTF-8 or GB18030, CSV or NDJSON,
one record at a time with the line it starts on. Pure (no Django).

Records are numbered from 1 in file order, bad ones included: a job's checkpoint is the number
of the last record whose outcome is committed, and a resumed job skips that many (parsing them
again, which costs far less than importing them; a gzip stream cannot be entered in the middle).
"""

import codecs
import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

GZIP_MAGIC = b"\x1f\x8b"
#: How much of the file the encoding is told from when it is not said.
_SNIFF_BYTES = 1 << 20
#: A CSV field as long as the largest event may be.
csv.field_size_limit(1 << 20)


@dataclass(frozen=True, slots=True)
class Record:
    number: int  # 1-based position among the file's records
    line: int  # the physical line it starts on
    fields: dict[str, Any] | None  # None: the record could not be read (``problem`` says why)
    problem: str = ""


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _binary(path: Path) -> gzip.GzipFile | io.BufferedReader:
    return gzip.open(path, "rb") if is_gzip(path) else path.open("rb")


def encoding_detect(path: Path) -> str:
    """``utf-8`` when the start of the (inflated) file is UTF-8 (a character cut at the end of
    the sample does not count against it), else ``gb18030``, which reads any byte string that
    Chinese POS and CRM exports (GBK, GB2312) write."""
    with _binary(path) as handle:
        sample = handle.read(_SNIFF_BYTES)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(sample, final=False)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


def format_of(path: Path) -> str:
    """``ndjson`` for ``.ndjson`` / ``.jsonl`` / ``.json`` (gzipped or not), else ``csv``."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return "ndjson" if suffixes and suffixes[-1] in (".ndjson", ".jsonl", ".json") else "csv"


def lines_count(path: Path) -> int:
    """The file's lines once inflated (a last line without its newline counts): what a job's
    progress is measured against. One pass at the speed of the disk (or of inflating)."""
    count, last = 0, b"\n"
    try:
        with _binary(path) as handle:
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, EOFError):  # a truncated gzip stream: the job's run says so, at its line
        return count
    return count + (last != b"\n")


class RecordReader:
    """Iterate a file's records. ``encoding``: ``utf-8``, ``gb18030`` or ``auto``."""

    def __init__(
        self, path: Path, *, fmt: str | None = None, encoding: str = "auto", delimiter: str = ","
    ) -> None:
        self.path = path
        self.format = fmt or format_of(path)
        self.encoding = encoding_detect(path) if encoding == "auto" else encoding
        self.delimiter = delimiter
        self._raw: IO[bytes] = path.open("rb")

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _text(self) -> io.TextIOWrapper:
        binary: gzip.GzipFile | IO[bytes] = (
            gzip.GzipFile(fileobj=self._raw, mode="rb") if is_gzip(self.path) else self._raw
        )
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name.
        encoding = "utf-8-sig" if self.encoding == "utf-8" else self.encoding
        return io.TextIOWrapper(binary, encoding=encoding, errors="strict", newline="")

    def __iter__(self) -> Iterator[Record]:
        text = self._text()
        try:
            if self.format == "ndjson":
                yield from self._ndjson(text)
            else:
                yield from self._csv(text)
        except UnicodeDecodeError as exc:
            raise FileUnreadable(
                f"the file is not {self.encoding} ({exc.reason} at byte {exc.start})"
            ) from exc
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise FileUnreadable(f"the file cannot be read: {exc}") from exc

    def _ndjson(self, text: io.TextIOWrapper) -> Iterator[Record]:
        number = 0
        for line_number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            number += 1
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Record(number, line_number, None, f"not JSON: {exc}")
                continue
            if not isinstance(value, dict):
                yield Record(number, line_number, None, "each line must be a JSON object")
                continue
            yield Record(number, line_number, value)

    def _csv(self, text: io.TextIOWrapper) -> Iterator[Record]:
        reader = csv.reader(text, delimiter=self.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [name.strip() for name in header]
        number = 0
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a NUL byte, a field past the limit: this record only
                number += 1
                yield Record(number, start, None, f"not CSV: {exc}")
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not any(value.strip() for value in values):
                continue
            number += 1
            if len(values) != len(header):
                yield Record(number, line, None, f"{len(values)} fields where the header names {len(header)}")
                continue
            yield Record(number, line, dict(zip(header, values, strict=True)))


class FileUnreadable(ValueError):
    """The file as a whole cannot be read (its encoding, a truncated gzip stream)."""
