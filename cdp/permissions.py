"""Permissions for the staff API: a role's group holds Django permissions (``cdp.roles``);
views ask for permissions, never for role names."""

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from cdp.scopes import request_scope


def permissions_required(*permissions: str) -> type[BasePermission]:
    """A permission class admitting active staff holding all of ``permissions``
    (``app_label.codename``; roles grant them)."""

    class HasPermissions(BasePermission):
        message = f"Your role does not allow this ({', '.join(permissions)})."

        def has_permission(self, request: Request, view: APIView) -> bool:
            user = request.user
            return bool(user and user.is_authenticated and user.is_active and user.has_perms(permissions))

    HasPermissions.__name__ = f"HasPermissions[{'|'.join(permissions)}]"
    return HasPermissions


class Unscoped(BasePermission):
    """Admits only users without a store or channel scope (``cdp.scopes``): for pulls that
    cover every store at once (a segment's members, exports, changes and webhooks, coupons
    issued to a segment). Put after the permission class, so that a caller without the role
    hears about the role first."""

    message = (
        "Your account is scoped to stores or channels; this covers members of every store, so it "
        "is open to unscoped accounts only."
    )

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request_scope(request).unrestricted


def request_staff(request: Request | HttpRequest) -> User:
    """The signed-in user making a request to a view that admits only staff (a permission
    class above, ``login_required``, the admin site), as the services that record who did
    what take it. Never anonymous there; if it were, the request is refused (403), not
    recorded as made by nobody."""
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user
