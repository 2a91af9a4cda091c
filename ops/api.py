"""Staff API of operations, mounted at /api/v1/: alert rules (read: ``ops.view_alertrule``,
write: ``ops.add_alertrule`` / ``ops.change_alertrule``) and alerts (read: ``ops.view_alert``;
acknowledge and resolve: ``ops.change_alert``). Administrators hold them (``cdp.roles``)."""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError
from cdp.pagination import page_serializer, paginated
from cdp.permissions import permissions_required, request_staff
from ops.models import Alert, AlertNotice, AlertRule, Level, NotifyTarget
from ops.rules import rule_check
from ops.services import AlertStateError, alert_acknowledge, alert_resolve


class RuleOutput(serializers.ModelSerializer):
    targets: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, read_only=True
    )

    class Meta:
        model = AlertRule
        fields = ("id", "key", "name", "level", "condition", "params", "window_minutes", "escalate_after_minutes",
                  "targets", "enabled", "built_in", "last_evaluated_at", "last_error")  # fmt: skip


class RuleInput(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    level = serializers.ChoiceField(choices=Level.choices)
    condition = serializers.CharField(max_length=64)
    params = serializers.JSONField(required=False, default=dict)
    window_minutes = serializers.IntegerField(min_value=1, max_value=525_600, required=False, default=60)
    escalate_after_minutes = serializers.IntegerField(
        min_value=1, max_value=10_080, required=False, default=30
    )
    targets: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", many=True, queryset=NotifyTarget.objects.all(), required=False
    )
    enabled = serializers.BooleanField(required=False, default=True)

    def validate(self, attrs: dict) -> dict:
        condition = attrs.get("condition", getattr(self.instance, "condition", ""))
        params = attrs.get("params", getattr(self.instance, "params", {}))
        try:
            rule_check(condition=condition, params=params)
        except ValidationError as error:
            raise serializers.ValidationError(error.message_dict) from error
        key = attrs.get("key")
        others = AlertRule.objects.filter(key=key)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if key and others.exists():
            raise serializers.ValidationError({"key": "a rule with this key exists"})
        return attrs


def _rule_save(rule: AlertRule, data: dict) -> AlertRule:
    targets = data.pop("targets", None)
    for name, value in data.items():
        setattr(rule, name, value)
    rule.save()
    if targets is not None:
        rule.targets.set(targets)
    return rule


class RulesView(APIView):
    def get_permissions(self) -> list:
        needed = "ops.view_alertrule" if self.request.method == "GET" else "ops.add_alertrule"
        return [permissions_required(needed)()]

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(RuleOutput)},
        tags=["alerts"],
        operation_id="alert_rules_list",
    )
    def get(self, request: Request) -> Response:
        """The alert rules, oldest first."""
        rules = AlertRule.objects.prefetch_related("targets")
        return paginated(
            request, self, rules, ordering="id", serialize=lambda page: RuleOutput(page, many=True).data
        )

    @extend_schema(request=RuleInput, responses={201: RuleOutput}, tags=["alerts"])
    def post(self, request: Request) -> Response:
        """A new rule over a registered condition (``GET`` lists the rules; the conditions are
        named in the README's Operations section)."""
        given = RuleInput(data=request.data)
        given.is_valid(raise_exception=True)
        rule = _rule_save(AlertRule(), dict(given.validated_data))
        return Response(RuleOutput(rule).data, status=status.HTTP_201_CREATED)


class RuleView(APIView):
    def get_permissions(self) -> list:
        needed = "ops.view_alertrule" if self.request.method == "GET" else "ops.change_alertrule"
        return [permissions_required(needed)()]

    @extend_schema(responses={200: RuleOutput}, tags=["alerts"])
    def get(self, request: Request, rule: int) -> Response:
        return Response(RuleOutput(get_object_or_404(AlertRule, pk=rule)).data)

    @extend_schema(request=RuleInput(partial=True), responses={200: RuleOutput}, tags=["alerts"])
    def patch(self, request: Request, rule: int) -> Response:
        """Change a rule (a built-in one too: its level, parameters, window, targets, on or off)."""
        current = get_object_or_404(AlertRule, pk=rule)
        given = RuleInput(current, data=request.data, partial=True)
        given.is_valid(raise_exception=True)
        return Response(RuleOutput(_rule_save(current, dict(given.validated_data))).data)


class NoticeOutput(serializers.ModelSerializer):
    target: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = AlertNotice
        fields = ("kind", "target", "at", "ok", "error")


class AlertOutput(serializers.ModelSerializer):
    rule: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="key", read_only=True)
    acknowledged_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    resolved_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    notices = NoticeOutput(many=True, read_only=True)

    class Meta:
        model = Alert
        fields = ("id", "rule", "level", "subject", "status", "value", "summary", "opened_at", "last_seen_at",
                  "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by", "escalated_at", "notices")  # fmt: skip


class AlertsView(APIView):
    permission_classes = (permissions_required("ops.view_alert"),)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=Alert.Status.values),
            OpenApiParameter("level", OpenApiTypes.STR, enum=Level.values),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(AlertOutput)},
        tags=["alerts"],
        operation_id="alerts_list",
    )
    def get(self, request: Request) -> Response:
        """Alerts, newest first, with their notices: the history (``status``, ``level`` filter)."""
        alerts = Alert.objects.select_related("rule", "acknowledged_by", "resolved_by").prefetch_related(
            "notices__target"
        )
        for name, allowed in (("status", Alert.Status.values), ("level", Level.values)):
            wanted = request.query_params.get(name)
            if wanted is not None:
                if wanted not in allowed:
                    raise ApiError(
                        code="invalid",
                        message=f"Bad {name}.",
                        errors=[FieldError(name, f"one of {', '.join(allowed)}")],
                    )
                alerts = alerts.filter(**{name: wanted})
        return paginated(
            request, self, alerts, ordering="-id", serialize=lambda page: AlertOutput(page, many=True).data
        )


class AlertView(APIView):
    permission_classes = (permissions_required("ops.view_alert"),)

    @extend_schema(responses={200: AlertOutput}, tags=["alerts"])
    def get(self, request: Request, alert: int) -> Response:
        return Response(AlertOutput(get_object_or_404(Alert, pk=alert)).data)


def _alert_command(action: str) -> type[APIView]:
    class AlertCommandView(APIView):
        permission_classes = (permissions_required("ops.change_alert"),)

        @extend_schema(request=None, responses={200: AlertOutput, 409: OpenApiTypes.OBJECT}, tags=["alerts"])
        def post(self, request: Request, alert: int) -> Response:
            found = get_object_or_404(Alert, pk=alert)
            command = alert_acknowledge if action == "acknowledge" else alert_resolve
            try:
                done = command(alert=found, by=request_staff(request))
            except AlertStateError as error:
                raise ApiError(
                    code="conflict", message=f"Cannot {action}: {error}.", status_code=409
                ) from error
            return Response(AlertOutput(Alert.objects.get(pk=done.pk)).data)

    AlertCommandView.__name__ = f"Alert{action.capitalize()}View"
    AlertCommandView.__doc__ = (
        "Someone is on it: no escalation from now on (an open alert only)."
        if action == "acknowledge"
        else "Closed by hand; if its condition still holds, the next evaluation opens a new alert."
    )
    return AlertCommandView


AlertAcknowledgeView = _alert_command("acknowledge")
AlertResolveView = _alert_command("resolve")
