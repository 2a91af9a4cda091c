"""Staff API of operations, mounted at /api/v1/."""

from django.urls import path

from ops.api import AlertAcknowledgeView, AlertResolveView, AlertsView, AlertView, RulesView, RuleView

urlpatterns = [
    path("alert-rules/", RulesView.as_view(), name="alert-rules"),
    path("alert-rules/<int:rule>/", RuleView.as_view(), name="alert-rule"),
    path("alerts/", AlertsView.as_view(), name="alerts"),
    path("alerts/<int:alert>/", AlertView.as_view(), name="alert"),
    path("alerts/<int:alert>/acknowledge/", AlertAcknowledgeView.as_view(), name="alert-acknowledge"),
    path("alerts/<int:alert>/resolve/", AlertResolveView.as_view(), name="alert-resolve"),
]
