"""Middleware of the platform."""

from collections.abc import Callable

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
