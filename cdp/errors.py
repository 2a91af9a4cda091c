"""One error shape for every API: ``{"code", "message", "errors": [{"field", "reason"}]}``.

``code`` is stable and machine-readable, ``message`` is for people, ``errors`` names each
offending field (empty when the error is not about a field).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class ApiError(exceptions.APIException):
    """An error with an explicit code, message and field errors."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        errors: Sequence[FieldError] = (),
        status_code: int = status.HTTP_400_BAD_REQUEST,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.errors = tuple(errors)


def error_body(*, code: str, message: str, errors: Iterable[FieldError] = ()) -> dict[str, Any]:
    return {"code": code, "message": message, "errors": [e.as_dict() for e in errors]}


def _flatten(detail: Any, prefix: str = "") -> list[FieldError]:
    if isinstance(detail, Mapping):
        out: list[FieldError] = []
        for key, value in detail.items():
            field = key if not prefix else f"{prefix}.{key}"
            if key == "non_field_errors":
                field = prefix
            out.extend(_flatten(value, field))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [FieldError(prefix, str(item)) for item in detail]
        out = []
        for index, item in enumerate(detail):
            out.extend(_flatten(item, f"{prefix}[{index}]"))
        return out
    return [FieldError(prefix, str(detail))]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        response.data = error_body(code=exc.code, message=exc.message, errors=exc.errors)
    elif isinstance(exc, exceptions.ValidationError):
        response.data = error_body(
            code="invalid", message="The request has invalid fields.", errors=_flatten(exc.detail)
        )
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(code=str(code), message=str(exc.detail))
    return response
