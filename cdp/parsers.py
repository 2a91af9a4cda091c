"""JSON bodies of the staff API, read by ``cdp.json_limits``: exact and within its one nesting
limit, so that a body nested thousands of levels deep is a 400 naming the limit, never a
``RecursionError`` (the standard library's parser, DRF's JSONParser) and a 500."""

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from cdp.json_limits import JsonTooDeep, json_loads_bounded


class BoundedJSONParser(JSONParser):
    """``application/json`` (DRF's JSONParser's media types) through ``json_loads_bounded``.

    Errors are DRF's ``ParseError`` with their own code (``too_deep``, ``invalid_json``), which
    ``cdp.errors`` renders in the one shape (importing it here would be circular: DRF reads
    the parser setting while ``cdp.errors`` imports DRF's views)."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        try:
            if encoding.lower().replace("-", "") != "utf8":  # orjson reads UTF-8 only
                raw = raw.decode(encoding).encode()
            return json_loads_bounded(raw)
        except JsonTooDeep as exc:
            raise ParseError(str(exc), code="too_deep") from exc
        except (ValueError, LookupError) as exc:  # orjson's and json's errors, a bad charset
            raise ParseError(f"The body is not valid JSON: {exc}", code="invalid_json") from exc
