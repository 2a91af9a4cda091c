from django import forms
from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from cdp.admin import ReadOnlyAdmin
from ops.models import Alert, AlertNotice, AlertRule, NotifyTarget
from ops.rules import rule_check, target_check


class AlertRuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = ("key", "name", "level", "condition", "params", "window_minutes", "escalate_after_minutes",
                  "targets", "enabled")  # fmt: skip

    def clean(self) -> dict:
        data = super().clean() or {}
        if "condition" in data:
            rule_check(condition=data["condition"], params=data.get("params", {}))
        return data


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = (
        "key",
        "name",
        "level",
        "condition",
        "window_minutes",
        "enabled",
        "last_evaluated_at",
        "last_error",
    )
    list_filter = ("level", "enabled", "built_in")
    filter_horizontal = ("targets",)
    readonly_fields = ("built_in", "last_evaluated_at", "last_error")


class NotifyTargetForm(forms.ModelForm):
    class Meta:
        model = NotifyTarget
        fields = ("name", "kind", "url", "flavor", "secret", "email", "enabled", "escalation")

    def clean(self) -> dict:
        data = super().clean() or {}
        target_check(kind=data.get("kind", ""), url=data.get("url", ""), email=data.get("email", ""))
        return data


@admin.register(NotifyTarget)
class NotifyTargetAdmin(admin.ModelAdmin):
    form = NotifyTargetForm
    list_display = ("name", "kind", "flavor", "url", "email", "enabled", "escalation")


class NoticeInline(admin.TabularInline):
    model = AlertNotice
    extra = 0
    can_delete = False
    readonly_fields = ("target", "kind", "at", "ok", "error")

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = (
        "opened_at",
        "level",
        "rule",
        "subject",
        "status",
        "value",
        "acknowledged_by",
        "resolved_at",
    )
    list_filter = ("status", "level", "rule")
    inlines = (NoticeInline,)
