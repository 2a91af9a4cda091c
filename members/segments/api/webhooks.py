"""A segment's webhooks: subscribe a URL to its entries and exits, see, pause, resume, point
elsewhere or remove a subscription, read its delivery log. Role ``marketing`` (and admin)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.db import MAX_BIGINT
from cdp.errors import ApiError, FieldError
from cdp.pagination import CURSOR_HELP, cursor_parameter, page_serializer, paginated, query_cursor, query_int
from cdp.permissions import Unscoped, permissions_required, request_staff
from members.segments.api import PURPOSE_HELP, segment_by_key
from members.segments.models import Segment, SegmentWebhook
from members.segments.webhooks.services import (
    webhook_create,
    webhook_delete,
    webhook_deliveries,
    webhook_update,
)
from members.segments.webhooks.transport import WebhookRefused

VIEW_WEBHOOKS = "segments.view_segmentwebhook"
ADD_WEBHOOKS = "segments.add_segmentwebhook"
CHANGE_WEBHOOKS = "segments.change_segmentwebhook"
DELETE_WEBHOOKS = "segments.delete_segmentwebhook"
_PERMISSION_BY_METHOD = {"POST": ADD_WEBHOOKS, "PATCH": CHANGE_WEBHOOKS, "DELETE": DELETE_WEBHOOKS}
_WEBHOOK_ID = OpenApiParameter("webhook_id", OpenApiTypes.INT, OpenApiParameter.PATH)


class WebhookInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000, help_text="http or https; receives the POSTs.")
    changes = serializers.ChoiceField(
        choices=SegmentWebhook.Changes.choices, default=SegmentWebhook.Changes.BOTH,
        help_text="Which changes to send: members who entered, who exited, or both.",
    )  # fmt: skip
    purpose = serializers.CharField(
        max_length=64, default="marketing",
        help_text=PURPOSE_HELP.replace("when the rows are read", "when a delivery is sent")
        + " Exits are always sent: they only tell the receiver to drop an id.",
    )  # fmt: skip
    since = serializers.IntegerField(
        min_value=0, max_value=MAX_BIGINT, required=False,
        help_text="Send the changes after this cursor (0: the segment's whole history). "
        "Default: from the segment's latest change, i.e. only what happens from now on.",
    )  # fmt: skip


class WebhookChangeInput(serializers.Serializer):
    active = serializers.BooleanField(
        required=False,
        help_text="false pauses deliveries; true resumes them from the cursor, failures forgotten.",
    )
    url = serializers.URLField(max_length=2000, required=False)
    changes = serializers.ChoiceField(choices=SegmentWebhook.Changes.choices, required=False)
    purpose = serializers.CharField(max_length=64, required=False)

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, "cannot be changed"))
        if not attrs:
            raise serializers.ValidationError({"active": "give active, url, changes or purpose"})
        return attrs


class WebhookOutput(serializers.Serializer):
    id = serializers.IntegerField()
    segment = serializers.CharField(source="segment.key")
    url = serializers.URLField()
    changes = serializers.ChoiceField(choices=SegmentWebhook.Changes.choices)
    purpose = serializers.CharField(help_text="What the receiver uses members for (consent).")
    active = serializers.BooleanField()
    secret_hint = serializers.SerializerMethodField(help_text="The secret's first characters.")
    cursor = serializers.IntegerField(help_text="Changes after this cursor are not delivered yet.")
    failures = serializers.IntegerField(help_text="Failed deliveries in a row.")
    next_attempt_at = serializers.DateTimeField(allow_null=True, help_text="After a failure: the next try.")
    disabled_reason = serializers.CharField(help_text="Why it is off, if it is.")
    last_success_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_secret_hint(self, webhook: SegmentWebhook) -> str:
        return f"{webhook.secret[:10]}…"


class WebhookCreatedOutput(WebhookOutput):
    secret = serializers.CharField(
        help_text="Signs every delivery (X-CDP-Signature). Shown this once: keep it with the receiver."
    )


class DeliveryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    delivery_id = serializers.UUIDField(help_text="The X-CDP-Delivery header of the request.")
    first_cursor = serializers.IntegerField()
    last_cursor = serializers.IntegerField()
    count = serializers.IntegerField(help_text="Changes in the batch.")
    withheld = serializers.DictField(
        child=serializers.IntegerField(), help_text='Changes left out, by reason: {"no_consent": 3}.'
    )
    attempt = serializers.IntegerField(help_text="1: first try of this batch; n: the n-th in a row.")
    succeeded = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True, help_text="None: no HTTP answer (see error).")
    response = serializers.CharField(help_text="The start of the receiver's answer.")
    error = serializers.CharField()
    duration_ms = serializers.IntegerField()
    at = serializers.DateTimeField()


class DeliveriesPage(serializers.Serializer):
    results = DeliveryOutput(many=True)
    next_cursor = serializers.IntegerField(allow_null=True, help_text=CURSOR_HELP)


def _refused(refused: WebhookRefused) -> ApiError:
    return ApiError(
        code="conflict" if refused.status == status.HTTP_409_CONFLICT else "invalid",
        message=refused.reason,
        errors=[FieldError(refused.field, refused.reason)],
        status_code=refused.status,
    )


def _webhook_of(segment: Segment, webhook_id: int) -> SegmentWebhook:
    webhook = (
        SegmentWebhook.objects.select_related("segment", "created_by")
        .filter(segment=segment, pk=webhook_id)
        .first()
    )
    if webhook is None:
        raise ApiError(
            code="not_found",
            message=f"Segment {segment.key!r} has no webhook {webhook_id}.",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    return webhook


class _ByMethod(APIView):
    def get_permissions(self) -> list[BasePermission]:
        # A webhook sends a segment's members of every store: unscoped accounts only.
        wanted = _PERMISSION_BY_METHOD.get(self.request.method or "", VIEW_WEBHOOKS)
        return [permissions_required(wanted)(), Unscoped()]


class SegmentWebhooksView(_ByMethod):
    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(WebhookOutput)},
        operation_id="api_v1_segments_webhooks_list",
        tags=["segments"],
    )
    def get(self, request: Request, key: str) -> Response:
        """The segment's webhooks, oldest first, a page at a time (secrets hinted, never shown
        again)."""
        segment = segment_by_key(key)
        webhooks = SegmentWebhook.objects.filter(segment=segment).select_related("segment", "created_by")
        return paginated(request, self, webhooks, ordering="id",
                         serialize=lambda page: WebhookOutput(page, many=True).data)  # fmt: skip

    @extend_schema(request=WebhookInput, responses={201: WebhookCreatedOutput}, tags=["segments"])
    def post(self, request: Request, key: str) -> Response:
        """Subscribe a URL to the segment's entries and exits. The answer holds the signing
        secret, shown this once. Deliveries are JSON POSTs, in order, signed, retried with
        backoff; see the README (Webhooks) for the payload and how to verify a signature."""
        segment = segment_by_key(key)
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            webhook = webhook_create(
                segment=segment, created_by=request_staff(request), **data.validated_data
            )
        except WebhookRefused as refused:
            raise _refused(refused) from refused
        body = WebhookCreatedOutput(webhook).data
        return Response(body, status=status.HTTP_201_CREATED)


class SegmentWebhookView(_ByMethod):
    @extend_schema(parameters=[_WEBHOOK_ID], responses={200: WebhookOutput}, tags=["segments"])
    def get(self, request: Request, key: str, webhook_id: int) -> Response:
        """A webhook: where it posts, its cursor, failures in a row, next try, why it is off."""
        return Response(WebhookOutput(_webhook_of(segment_by_key(key), webhook_id)).data)

    @extend_schema(
        parameters=[_WEBHOOK_ID],
        request=WebhookChangeInput,
        responses={200: WebhookOutput},
        tags=["segments"],
    )
    def patch(self, request: Request, key: str, webhook_id: int) -> Response:
        """Pause (``active: false``) or resume (``active: true``: also after it was turned off
        by failures; the backlog from its cursor goes out at once), or change its URL, the
        changes it wants or its purpose."""
        webhook = _webhook_of(segment_by_key(key), webhook_id)
        data = WebhookChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            webhook = webhook_update(webhook=webhook, **data.validated_data)
        except WebhookRefused as refused:
            raise _refused(refused) from refused
        return Response(WebhookOutput(webhook).data)

    @extend_schema(parameters=[_WEBHOOK_ID], responses={204: None}, tags=["segments"])
    def delete(self, request: Request, key: str, webhook_id: int) -> Response:
        """Unsubscribe; the delivery log goes with it."""
        webhook_delete(webhook=_webhook_of(segment_by_key(key), webhook_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesView(_ByMethod):
    @extend_schema(
        parameters=[_WEBHOOK_ID, cursor_parameter("before"),
                    OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: DeliveriesPage}, tags=["segments"],
    )  # fmt: skip
    def get(self, request: Request, key: str, webhook_id: int) -> Response:
        """The webhook's delivery attempts, newest first, a keyset page at a time: what was
        sent (cursor range), what the receiver answered, how long it took."""
        webhook = _webhook_of(segment_by_key(key), webhook_id)
        size = query_int(request, "page_size", default=100, low=1, high=1000)
        before = query_cursor(request, legacy="before")
        rows = webhook_deliveries(webhook=webhook, before=before, size=size + 1)
        page = rows[:size]
        return Response(
            DeliveriesPage({"results": page, "next_cursor": page[-1].pk if len(rows) > size else None}).data
        )
