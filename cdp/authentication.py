"""Staff API authentication: ``Authorization: Token <t>`` or ``Authorization: Bearer <t>``.

Only staff tokens are accepted here; a source write key is a different credential kind and
never matches (and a staff token never works on ingestion). What a token stands for is kept per
process (``cdp.staff_tokens``: a revocation or a change of roles, permissions or scope takes
effect at the next request).
"""

from django.contrib.auth.models import User
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from cdp.models import ApiToken
from cdp.staff_tokens import staff_token_find

_SCHEMES = (b"token", b"bearer")


class StaffTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in _SCHEMES:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be '<scheme> <token>'.")
        try:
            secret = header[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Token contains invalid characters.") from exc
        found = staff_token_find(secret)
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return found

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
