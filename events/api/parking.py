"""Staff API for parked events: list them, and replay them after a fix. Admins only."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from cdp.db import MAX_BIGINT
from cdp.errors import ApiError
from cdp.models import AuditEntry
from cdp.permissions import permissions_required
from cdp.services import audit_record
from events.models import ParkedEvent
from events.parking import parked_events_replay
from events.tasks import process_pending_enqueue

VIEW_PARKED, REPLAY_PARKED = "events.view_parkedevent", "events.replay_parkedevent"


class ParkedEventOutput(serializers.ModelSerializer):
    # The event's own fields as stored text: an event parked because it cannot be read back
    # (a timestamp beyond what Python holds) must still be listed.
    source = serializers.IntegerField(source="event.source_id")  # type: ignore[assignment]  # a field named "source" shadows the stubs' Field.source
    message_id = serializers.CharField(source="event.message_id")
    type = serializers.CharField(source="event.type")
    name = serializers.SerializerMethodField()

    class Meta:
        model = ParkedEvent
        fields = (
            "id", "event_id", "source", "message_id", "type", "name", "stage", "error", "traceback",
            "attempts", "first_failed_at", "last_failed_at",
        )  # fmt: skip

    def get_name(self, parked: ParkedEvent) -> str:
        return parked.event.event or parked.event.name


class ParkedEventsReplayInput(serializers.Serializer):
    stage = serializers.CharField(
        max_length=255, required=False, help_text="Only the events parked at this stage (dotted path)."
    )


class ParkedEventsReplayOutput(serializers.Serializer):
    replayed = serializers.IntegerField()
    event_ids = serializers.ListField(child=serializers.IntegerField())


_LISTED = (
    "id", "event", "stage", "error", "traceback", "attempts", "first_failed_at", "last_failed_at",
    "event__source_id", "event__message_id", "event__type", "event__event", "event__name",
)  # fmt: skip


@extend_schema(tags=["operations"])
class ParkedEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Events a pipeline stage failed on, parked so that the others go on; newest first.
    Filter with ``?stage=<dotted path>``."""

    permission_classes = (permissions_required(VIEW_PARKED),)
    serializer_class = ParkedEventOutput
    lookup_value_regex = "[0-9]{1,19}"  # anything else is no route: a JSON 404 (cdp.errors.not_found)

    def get_queryset(self):  # noqa: ANN201 - DRF hook
        queryset = ParkedEvent.objects.filter(replayed_at__isnull=True).select_related("event").only(*_LISTED)
        if stage := self.request.query_params.get("stage"):
            queryset = queryset.filter(stage=stage)
        return queryset

    @extend_schema(request=None, responses={200: ParkedEventsReplayOutput})
    @action(
        detail=True, methods=["post"], permission_classes=(permissions_required(VIEW_PARKED, REPLAY_PARKED),)
    )
    def replay(self, request: Request, pk: str) -> Response:
        """Queue this event again (after a fix), exactly once: a second call finds it no longer
        parked (404). If it fails again it is parked again, its attempts counted."""
        return _replay(request, ids=[int(pk)], stage=None)

    @extend_schema(
        request=ParkedEventsReplayInput,
        responses={200: ParkedEventsReplayOutput},
        operation_id="parked_events_replay_all",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="replay",
        permission_classes=(permissions_required(VIEW_PARKED, REPLAY_PARKED),),
    )
    def replay_all(self, request: Request) -> Response:
        """Queue every parked event again (or those of ``stage``), each exactly once."""
        data = ParkedEventsReplayInput(data=request.data)
        data.is_valid(raise_exception=True)
        return _replay(request, ids=None, stage=data.validated_data.get("stage"))


def _replay(request: Request, *, ids: list[int] | None, stage: str | None) -> Response:
    with transaction.atomic():  # never replayed without its audit entry
        event_ids = parked_events_replay(
            ids=None if ids is None else [i for i in ids if i <= MAX_BIGINT], stage=stage
        )
        if not event_ids and ids is not None:
            raise ApiError(
                code="not_found", message="No such parked event (replayed already?).",
                status_code=status.HTTP_404_NOT_FOUND,
            )  # fmt: skip
        if event_ids:
            audit_record(
                user=request.user,
                action=AuditEntry.Action.REPLAY_PARKED,
                member_ids=(),
                channel="api",
                detail=f"events {', '.join(map(str, event_ids))}"[:255],
            )
            transaction.on_commit(process_pending_enqueue)
    return Response({"replayed": len(event_ids), "event_ids": event_ids})
