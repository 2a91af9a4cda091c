"""Permissions for the staff API: a role's group holds Django permissions (``cdp.roles``);
views ask for permissions, never for role names."""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView


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
