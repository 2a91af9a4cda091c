"""Log-in attempts limited per account and per client address (``RATE_LIMIT_LOGIN_ACCOUNT``,
``RATE_LIMIT_LOGIN_ADDRESS``), wherever a password is checked: the console's form and the
admin's both go through ``django.contrib.auth.authenticate``, hence through this backend.

Every attempt is counted before the password is checked, atomically against both limits
(``cdp.ratelimits``), so parallel guesses cannot slip past a limit between a check and a count;
a successful log-in clears its account's count (the owner who mistyped twice starts afresh),
not its address's. A refused attempt checks no password: the answer says nothing about it.
With Redis unreachable nobody logs in (fail closed) until it is back; sessions already open
go on. The console says why, with ``429`` or ``503`` and ``Retry-After``; the admin's form
shows its usual error.
"""

from typing import Any, NoReturn

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from cdp.ratelimits import Limit, RateLimitUnavailable, rate_for, rate_limit_hit, rate_limit_reset


def client_address(request: HttpRequest) -> str:
    """The client's address: ``REMOTE_ADDR``, or behind a proxy the header it sets
    (``RATE_LIMIT_CLIENT_ADDRESS_HEADER``; of a list, the last entry, the proxy's own)."""
    header = settings.RATE_LIMIT_CLIENT_ADDRESS_HEADER
    value = request.META.get(header, "") if header else ""
    if value:
        return value.rsplit(",", 1)[-1].strip()
    return str(request.META.get("REMOTE_ADDR", ""))


def _limits(request: HttpRequest | None, username: str) -> tuple[Limit | None, list[Limit]]:
    """The account's limit (None when off) and every limit an attempt counts against."""
    account_rate = rate_for("login_account", username)
    account = Limit(key=f"login:account:{username.casefold()}", rate=account_rate) if account_rate else None
    limits = [account] if account else []
    address = client_address(request) if request is not None else ""
    address_rate = rate_for("login_address", address) if address else None
    if address_rate is not None:
        limits.append(Limit(key=f"login:address:{address}", rate=address_rate))
    return account, limits


#: Set on the request when an attempt is refused: (status, Retry-After seconds, message).
REFUSAL_ATTRIBUTE = "cdp_login_refused"


class RateLimitedModelBackend(ModelBackend):
    """Django's username-and-password backend, behind the log-in limits."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        account, limits = _limits(request, str(username))
        try:
            verdict = rate_limit_hit(limits)
        except RateLimitUnavailable as unavailable:
            self._refuse(request, 503, unavailable.retry_after,
                         "Log-in is unavailable right now (its attempt counter cannot be reached). Try again shortly.")  # fmt: skip
        if not verdict.allowed:
            minutes = -(-verdict.retry_after // 60)
            self._refuse(request, 429, verdict.retry_after,
                         f"Too many log-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}.")  # fmt: skip
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and account is not None:
            rate_limit_reset(account)
        return user

    @staticmethod
    def _refuse(request: HttpRequest | None, status: int, retry_after: int, message: str) -> NoReturn:
        """Stop ``authenticate`` here (no other backend, no password checked)."""
        if request is not None:
            setattr(request, REFUSAL_ATTRIBUTE, (status, retry_after, message))
        raise PermissionDenied(message)


class ConsoleLoginView(LoginView):
    """The console's log-in page; an attempt the limits refused is answered ``429`` (or ``503``)
    with ``Retry-After`` and says so, instead of "didn't match"."""

    template_name = "console/login.html"

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        refused = getattr(self.request, REFUSAL_ATTRIBUTE, None)
        if refused is None:
            return super().form_invalid(form)
        status, retry_after, message = refused
        response = self.render_to_response(self.get_context_data(form=form, refusal=message), status=status)
        response["Retry-After"] = str(retry_after)
        return response
