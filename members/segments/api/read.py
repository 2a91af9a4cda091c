"""Segment definitions and the changes feed (who entered and who left since a cursor)."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.pagination import page_serializer, paginated, query_int
from cdp.permissions import Unscoped, permissions_required
from members.consent.statements import NO_CONSENT
from members.segments.api import PURPOSE_PARAMETER, VIEW_SEGMENTS, declared_purpose, segment_by_key
from members.segments.api.members import WithheldOutput
from members.segments.models import Segment
from members.segments.selectors import changes_consented, feed_horizon, segment_changes


class SegmentOutput(serializers.ModelSerializer):
    class Meta:
        model = Segment
        fields = ("key", "name", "description", "kind", "rule", "built_in", "size", "computed_at", "compute_ms",
                  "error", "updated_at")  # fmt: skip


class ChangeOutput(serializers.Serializer):
    cursor = serializers.IntegerField()
    member_id = serializers.IntegerField()
    change = serializers.ChoiceField(choices=["entered", "exited"])
    reason = serializers.CharField(
        help_text="Empty, or erased: the person was erased; drop everything you hold about them. "
        "consent_withdrawn (an exit) / consent_granted (an entry): the member stays in the segment but "
        "withdrew / granted again consent to `purpose`, so may no longer / may again be used for it."
    )
    purpose = serializers.CharField(
        help_text="The consent purpose a consent_withdrawn / consent_granted change is about; else empty."
    )
    at = serializers.DateTimeField()


class ChangesPage(serializers.Serializer):
    results = ChangeOutput(many=True)
    next_since = serializers.IntegerField(help_text="Pass as ?since= next time: changes after these.")
    purpose = serializers.CharField(help_text="The purpose the changes were read for.")
    withheld = WithheldOutput(help_text="Entries of this page left out, by reason (exits always go).")


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
                    OpenApiParameter("page_size", OpenApiTypes.INT), PURPOSE_PARAMETER],
        responses={200: ChangesPage}, tags=["segments"],
    )  # fmt: skip
    def get(self, request: Request, key: str) -> Response:
        """Who entered and who left since a cursor, oldest first: a tool keeps ``next_since``
        and asks again to sync incrementally. The entry of a member without consent to the
        declared purpose is left out and counted; exits always go."""
        segment = segment_by_key(key)
        purpose, purposes = declared_purpose(request.query_params.get("purpose"))
        since = query_int(request, "since", default=0, low=0, high=2**63 - 1)
        size = query_int(request, "page_size", default=1000, low=1, high=10_000)
        # Only up to the settled horizon: a change committing late with a lower id would
        # otherwise fall behind a cursor the tool already moved past.
        until = feed_horizon()
        changes = (
            [] if until is None else segment_changes(segment=segment, since=since, size=size, until=until)
        )
        read = [(c.pk, c.member_id, c.change, c.purpose, c.reason, c.at) for c in changes]
        given, withheld = changes_consented(read, purposes=purposes, at=timezone.now())
        return Response(
            ChangesPage({
                "results": [{"cursor": pk, "member_id": member, "change": change, "reason": reason,
                             "purpose": purpose, "at": at}
                            for pk, member, change, purpose, reason, at in given],
                "next_since": changes[-1].pk if changes else since,
                "purpose": purpose,
                "withheld": {NO_CONSENT: withheld},
            }).data
        )  # fmt: skip
