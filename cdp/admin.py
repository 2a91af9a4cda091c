from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest

from cdp.models import ApiToken, AuditEntry, Region, StaffScope
from cdp.permissions import request_staff
from cdp.roles import Role
from cdp.services import role_change_record, scope_text


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that change only through services (ledgers, logs, parked work): shown, never edited."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("key_prefix", "user", "name", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("user__username", "name", "key_prefix")
    readonly_fields = ("key_hash", "key_prefix", "created_at")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "member_ids", "channel", "address", "detail")
    list_filter = ("action", "channel")
    search_fields = ("actor", "detail")
    date_hierarchy = "at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "stores")
    search_fields = ("key", "name")


class StaffScopeInline(admin.StackedInline):
    model = StaffScope
    can_delete = True
    extra = 0
    filter_horizontal = ("regions",)
    verbose_name_plural = "scope (empty: every store and channel)"


admin.site.unregister(User)


@admin.register(User)
class StaffUserAdmin(UserAdmin):
    """Django's user admin, with the scope inline; a change of roles (groups) or of the scope
    made here is in the audit log, by the admin who made it."""

    inlines = (StaffScopeInline,)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: list, change: bool) -> None:
        user = form.instance
        before = _access(user) if change else ("none", "unscoped")
        super().save_related(request, form, formsets, change)
        after = _access(user)
        if after != before:
            role_change_record(
                user=user, by=request_staff(request), channel="admin",
                change=f"roles {before[0]} -> {after[0]}; scope {before[1]} -> {after[1]}",
            )  # fmt: skip


def _access(user: User) -> tuple[str, str]:
    roles = user.groups.filter(name__in=Role.values).values_list("name", flat=True)
    return ", ".join(sorted(roles)) or "none", scope_text(StaffScope.objects.filter(user=user).first())
