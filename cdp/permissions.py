"""Permissions for the staff API: a role's group holds Django permissions (``cdp.roles``)."""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from cdp.roles import Role, user_roles


def roles_required(*roles: Role) -> type[BasePermission]:
    """A permission class admitting authenticated staff holding any of ``roles``."""
    allowed = frozenset(roles)

    class HasRole(BasePermission):
        message = f"This requires one of the roles: {', '.join(sorted(allowed))}."

        def has_permission(self, request: Request, view: APIView) -> bool:
            return bool(user_roles(request.user) & allowed)

    HasRole.__name__ = f"HasRole[{'|'.join(sorted(allowed))}]"
    return HasRole


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
