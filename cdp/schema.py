"""OpenAPI (drf-spectacular) description of the staff API's authentication, and of the answers
every operation may give besides its own: the errors in the one shape (``cdp.errors``).

A view declares what it answers when it succeeds (and any error particular to it); the errors
any request can meet are declared here, once, for every operation (``error_responses``, a
postprocessing hook), so that the schema is honest about them (schemathesis holds the API to it:
``tests/cdp/test_openapi_conformance.py``):

- ``400`` invalid input, ``401`` no or a bad credential, ``429`` over the rate limit and ``503``
  (the database, or the staff API's rate limit, cannot be reached), the last two with
  ``Retry-After``: every operation;
- ``403`` the role does not allow it: every staff operation;
- ``404`` nothing there: every operation with a path parameter;
- ``409`` a conflict with the current state (a taken key, a built-in definition, a spent
  balance): every staff operation that writes;
- ``415`` a body of a media type the operation does not read: every operation with a body.
"""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse


class StaffTokenScheme(OpenApiAuthenticationExtension):
    target_class = "cdp.authentication.StaffTokenAuthentication"
    name = "staffToken"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A staff token from `manage.py create_token USERNAME --role ROLE`, sent as "
            "`Authorization: Bearer <token>` (or `Authorization: Token <token>`).",
        }


ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The one error shape: a stable `code`, a `message` for people, and each offending field.",
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
                "required": ["field", "reason"],
            },
        },
    },
    "required": ["code", "message", "errors"],
}
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}


def error_response(description: str) -> OpenApiResponse:
    """An error particular to an operation, for its ``extend_schema(responses=...)``: ``422``
    when a command is understood but cannot be done (``{422: error_response("...")}``)."""
    return OpenApiResponse(response=ERROR_REF, description=description)


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
        "required": True,
    }
}
_DESCRIPTIONS = {
    "400": "Invalid input: each offending field and why.",
    "401": "No credential, or one that is unknown, revoked or of the wrong kind.",
    "403": "The role does not allow this.",
    "404": "Nothing there.",
    "409": "A conflict with the current state.",
    "415": "A body of a media type this operation does not read.",
    "429": "Over the rate limit of this credential (see the README: Rate limits).",
    "503": "The database, or the staff API's rate limit, cannot be reached right now: nothing was done.",
}
_WRITES = {"post", "put", "patch", "delete"}


def _error_response(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if status in ("429", "503"):
        response["headers"] = _RETRY_AFTER
    return response


def error_responses(
    result: dict[str, Any], generator: object, request: object, public: bool
) -> dict[str, Any]:
    """Postprocessing hook: the errors each operation may answer, as the module says; what an
    operation declares itself is kept."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            staff = any("staffToken" in requirement for requirement in operation.get("security", []))
            statuses = ["400", "401", "429", "503"]
            if staff:
                statuses.append("403")
            if "{" in path:
                statuses.append("404")
            if staff and method in _WRITES:
                statuses.append("409")
            if "requestBody" in operation:
                statuses.append("415")
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(status, _error_response(status))
    return result
