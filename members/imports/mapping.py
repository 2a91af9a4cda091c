"""A column mapping for a legacy layout: which of the file's columns is which of ours, values
given to every row, the time zone of naive times. Pure (no Django): loaded from YAML or JSON.

```yaml
columns:            # the file's column -> our field (columns not named keep their own name)
  会员编号: member_id
  手机号: phone
  注册时间: registered_at
defaults:           # a field every row gets when it has none
  channel: pos
timezone: Asia/Shanghai   # naive times in the file are in this zone (default UTC)
encoding: gb18030          # utf-8, gb18030, or auto (the default: UTF-8 unless it cannot be)
format: csv                # csv or ndjson (default: from the file's name)
delimiter: ","
```
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

ENCODINGS = ("auto", "utf-8", "gb18030")
FORMATS = ("csv", "ndjson")


class MappingInvalid(ValueError):
    """A mapping file that cannot be used: says which key and why."""


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    columns: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    encoding: str = "auto"
    format: str | None = None
    delimiter: str = ","

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record under our field names, with the defaults where it has no value."""
        row: dict[str, Any] = {}
        for key, value in record.items():
            name = self.columns.get(key, key)
            if name is None or name == "":
                continue
            if isinstance(value, str):
                value = value.strip()
            row[name] = value
        for key, value in self.defaults.items():
            if row.get(key) in (None, ""):
                row[key] = value
        return row

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def mapping_parse(data: Any) -> ColumnMapping:
    if data is None:
        return ColumnMapping()
    if not isinstance(data, Mapping):
        raise MappingInvalid("the mapping must be an object (columns, defaults, timezone, encoding, format)")
    unknown = set(data) - {"columns", "defaults", "timezone", "encoding", "format", "delimiter"}
    if unknown:
        raise MappingInvalid(f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    columns = data.get("columns") or {}
    if not isinstance(columns, Mapping) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in columns.items()
    ):
        raise MappingInvalid("columns: must map each column name to a field name")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise MappingInvalid("defaults: must map field names to values")
    timezone = str(data.get("timezone") or "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MappingInvalid(f"timezone: {timezone!r} is not a time zone (e.g. Asia/Shanghai)") from exc
    encoding = str(data.get("encoding") or "auto").lower().replace("_", "-")
    if encoding not in ENCODINGS:
        raise MappingInvalid(f"encoding: one of {', '.join(ENCODINGS)}")
    fmt = data.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise MappingInvalid(f"format: one of {', '.join(FORMATS)}")
    delimiter = str(data.get("delimiter") or ",")
    if len(delimiter) != 1:
        raise MappingInvalid("delimiter: one character")
    return ColumnMapping(
        columns=dict(columns),
        defaults=dict(defaults),
        timezone=timezone,
        encoding=encoding,
        format=fmt,
        delimiter=delimiter,
    )


def mapping_text_read(text: str, *, name: str = "") -> dict[str, Any]:
    """A mapping's data from its text (JSON when the name ends in .json, else YAML, a superset
    of JSON), checked: a job keeps the data as written, and parses it when it runs."""
    try:
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise MappingInvalid(f"not valid {'JSON' if name.endswith('.json') else 'YAML'}: {exc}") from exc
    mapping_parse(data)
    return dict(data or {})


def mapping_file_read(path: Path) -> dict[str, Any]:
    return mapping_text_read(path.read_text(encoding="utf-8"), name=path.name)
