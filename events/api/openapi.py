"""OpenAPI (drf-spectacular) description of ingestion's credential: a source's write key as the
HTTP Basic user name, the scheme the ingestion views name ``writeKey`` (a postprocessing hook:
the views name the scheme themselves, so drf-spectacular defines none)."""

from typing import Any

WRITE_KEY_SCHEME = {
    "type": "http",
    "scheme": "basic",
    "description": "A source's write key as the Basic user name with an empty password "
    '(`curl -u "$WRITE_KEY:"`), or as `writeKey` in the body.',
}


def write_key_scheme(
    result: dict[str, Any], generator: object, request: object, public: bool
) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("securitySchemes", {})["writeKey"] = WRITE_KEY_SCHEME
    return result
