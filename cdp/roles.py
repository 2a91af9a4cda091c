"""Staff roles. Each role is a Django group of the same name (created by a migration)."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models


class Role(models.TextChoices):
    CRM_AGENT = "crm_agent", "CRM agent"
    CRM_MANAGER = "crm_manager", "CRM manager"
    MARKETING = "marketing", "Marketing"
    ADMIN = "admin", "Administrator"


def user_roles(user: AbstractBaseUser | AnonymousUser | None) -> frozenset[str]:
    """The roles a user holds; a superuser holds them all."""
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(Role.values)
    return frozenset(user.groups.filter(name__in=Role.values).values_list("name", flat=True))
