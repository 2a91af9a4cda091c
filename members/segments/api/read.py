"""Segment definitions and the changes feed (who entered and who left since a cursor)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.pagination import page_serializer, paginated, query_int
from cdp.permissions import Unscoped, permissions_required
from members.segments.api import VIEW_SEGMENTS, segment_by_key
from members.segments.models import Segment
from members.segments.selectors import feed_horizon, segment_changes


class SegmentOutput(serializers.ModelSerializer):
    class Meta:
        model = Segment
        fields = ("key", "name", "description", "kind", "rule", "built_in", "size", "computed_at", "compute_ms",
                  "error", "updated_at")  # fmt: skip


class ChangeOutput(serializers.Serializer):
    cursor = serializers.IntegerField()
    member_id = serializers.IntegerField()
    change = serializers.ChoiceField(choices=["entered", "exited"])
    at = serializers.DateTimeField()


class ChangesPage(serializers.Serializer):
    results = ChangeOutput(many=True)
    next_since = serializers.IntegerField(help_text="Pass as ?since= next time: changes after these.")


class SegmentsView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS),)

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(SegmentOutput)},
        operation_id="api_v1_segments_list",
        tags=["segments"],
    )
    def get(self, request: Request) -> Response:
        """The segments by key, a page at a time, each with its size and when it was last
        computed."""
        return paginated(request, self, Segment.objects.all(), ordering="key",
                         serialize=lambda page: SegmentOutput(page, many=True).data)  # fmt: skip


class SegmentView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS),)

    @extend_schema(responses={200: SegmentOutput}, tags=["segments"])
    def get(self, request: Request, key: str) -> Response:
        """A segment: its definition, size, when it was computed, how long it took, any error."""
        return Response(SegmentOutput(segment_by_key(key)).data)


class SegmentChangesView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS), Unscoped)

    @extend_schema(
        parameters=[OpenApiParameter("since", OpenApiTypes.INT, description="next_since of the last call; 0: all"),
                    OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: ChangesPage}, tags=["segments"],
    )  # fmt: skip
    def get(self, request: Request, key: str) -> Response:
        """Who entered and who left since a cursor, oldest first: a tool keeps ``next_since``
        and asks again to sync incrementally."""
        segment = segment_by_key(key)
        since = query_int(request, "since", default=0, low=0, high=2**63 - 1)
        size = query_int(request, "page_size", default=1000, low=1, high=10_000)
        # Only up to the settled horizon: a change committing late with a lower id would
        # otherwise fall behind a cursor the tool already moved past.
        until = feed_horizon()
        changes = (
            [] if until is None else segment_changes(segment=segment, since=since, size=size, until=until)
        )
        return Response(
            ChangesPage({
                "results": [{"cursor": c.pk, "member_id": c.member_id, "change": c.change, "at": c.at} for c in changes],
                "next_since": changes[-1].pk if changes else since,
            }).data
        )  # fmt: skip
