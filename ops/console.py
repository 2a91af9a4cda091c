"""The console's alerts page (``ops.view_alert``): what is open now by level, the rules, and the
history; acknowledge and resolve buttons for those who may (``ops.change_alert``)."""

import orjson
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from cdp.permissions import request_staff
from ops.models import Alert, AlertRule, Level
from ops.services import AlertStateError, alert_acknowledge, alert_resolve

HISTORY = 50
_LEVEL_ORDER: dict[str, int] = {Level.RED: 0, Level.YELLOW: 1, Level.BLUE: 2}


@login_required
@permission_required("ops.view_alert", raise_exception=True)
def alerts_page(request: HttpRequest) -> HttpResponse:
    current = sorted(
        Alert.objects.exclude(status=Alert.Status.RESOLVED).select_related("rule", "acknowledged_by"),
        key=lambda a: (_LEVEL_ORDER.get(a.level, 9), -a.opened_at.timestamp()),
    )
    history = (
        Alert.objects.filter(status=Alert.Status.RESOLVED)
        .select_related("rule", "acknowledged_by", "resolved_by")
        .order_by("-resolved_at", "-id")[:HISTORY]
    )
    rules = list(AlertRule.objects.prefetch_related("targets").order_by("id"))
    for rule in rules:  # shown as staff write them (JSON), not as Python's repr
        rule.params_text = orjson.dumps(rule.params).decode()  # type: ignore[attr-defined]
    return render(
        request,
        "ops/alerts.html",
        {"current": current, "history": history, "rules": rules, "levels": Level},
    )


def _command(request: HttpRequest, alert_id: int, action: str) -> HttpResponse:
    alert = get_object_or_404(Alert, pk=alert_id)
    command = alert_acknowledge if action == "acknowledge" else alert_resolve
    try:
        command(alert=alert, by=request_staff(request))
    except AlertStateError as error:
        messages.error(request, f"Cannot {action} alert #{alert.pk}: {error}.")
    else:
        messages.success(request, f"Alert #{alert.pk} {action}d.")
    return HttpResponseRedirect(reverse("console:alerts"))


@require_POST
@login_required
@permission_required("ops.change_alert", raise_exception=True)
def alert_acknowledge_view(request: HttpRequest, alert_id: int) -> HttpResponse:
    return _command(request, alert_id, "acknowledge")


@require_POST
@login_required
@permission_required("ops.change_alert", raise_exception=True)
def alert_resolve_view(request: HttpRequest, alert_id: int) -> HttpResponse:
    return _command(request, alert_id, "resolve")


#: Added to the console's URLs (namespace ``console``) by ``config.urls``.
urlpatterns = [
    path("alerts/", alerts_page, name="alerts"),
    path("alerts/<int:alert_id>/acknowledge/", alert_acknowledge_view, name="alert-acknowledge"),
    path("alerts/<int:alert_id>/resolve/", alert_resolve_view, name="alert-resolve"),
]
