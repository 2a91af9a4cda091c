"""Middleware of the platform."""

import ipaddress
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from cdp.errors import database_outage_response, is_database_outage


class DatabaseOutageMiddleware:
    """A view that fails because PostgreSQL cannot be reached answers ``503`` with
    ``Retry-After`` (JSON in the one error shape on the API paths) instead of a 500 page.

    DRF views answer so themselves (``cdp.errors.api_exception_handler``); this covers the
    others (the console's login check, health, admin) whatever ``DEBUG`` says. What fails
    outside any view (a middleware, the session saved after the view) reaches
    ``cdp.errors.server_error`` instead, which answers the same.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_database_outage(exception):
            return database_outage_response(request, exception)
        return None


#: The request being served: its address is worked out when something asks (the audit log),
#: not on every request (ingestion never asks; parsing the address was 2% of a single event).
_client_request: ContextVar[HttpRequest | None] = ContextVar("cdp_client_request", default=None)


def client_address(request: HttpRequest) -> str | None:
    """The address the request came from: ``REMOTE_ADDR``, or behind
    ``settings.TRUSTED_PROXY_COUNT`` proxies of our own (a load balancer, nginx) the address the
    nearest of them saw, read from the right of ``X-Forwarded-For`` (what a client writes on
    the left of that header is never trusted)."""
    address = request.META.get("REMOTE_ADDR", "")
    proxies: int = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= proxies:
            address = forwarded[-proxies]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def current_client_address() -> str | None:
    """The address of the request being served (None outside one: a task, a command)."""
    request = _client_request.get()
    return None if request is None else client_address(request)


class ClientAddressMiddleware:
    """Makes the client's address known to whatever records the request in the audit log,
    however deep (``cdp.services.audit_record``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _client_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _client_request.reset(token)
