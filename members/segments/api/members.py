"""A segment's members, a keyset page at a time."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.pagination import query_int
from cdp.permissions import permissions_required
from members.segments.api import VIEW_SEGMENTS, segment_by_key
from members.segments.selectors import segment_members


class SegmentMemberOutput(serializers.Serializer):
    member_id = serializers.IntegerField()
    entered_at = serializers.DateTimeField()


class SegmentMembersPage(serializers.Serializer):
    results = SegmentMemberOutput(many=True)
    next_cursor = serializers.IntegerField(allow_null=True, help_text="Pass as ?cursor= for the next page.")


class SegmentMembersView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS),)

    @extend_schema(
        parameters=[OpenApiParameter("cursor", OpenApiTypes.INT), OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: SegmentMembersPage}, tags=["segments"],
    )  # fmt: skip
    def get(self, request: Request, key: str) -> Response:
        """The segment's members by member id, a keyset page at a time: stable while members
        enter and leave (no offsets)."""
        segment = segment_by_key(key)
        size = query_int(request, "page_size", default=1000, low=1, high=10_000)
        after = query_int(request, "cursor", default=0, low=0, high=2**63 - 1)
        rows = segment_members(segment=segment, after=after, size=size + 1)  # type: ignore[arg-type, operator]
        page = rows[:size]
        return Response(
            SegmentMembersPage({
                "results": [{"member_id": m, "entered_at": at} for m, at in page],
                "next_cursor": page[-1][0] if len(rows) > size else None,  # type: ignore[operator]
            }).data
        )  # fmt: skip
