"""Role-based permissions for the staff API."""

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
