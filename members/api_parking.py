"""Staff API for parked members: list them, and replay them after a fix. Admins only."""

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
from members.marks import members_refresh_enqueue
from members.models import ParkedMember
from members.parking import parked_members_replay

VIEW_PARKED, REPLAY_PARKED = "members.view_parkedmember", "members.replay_parkedmember"


class ParkedMemberOutput(serializers.ModelSerializer):
    class Meta:
        model = ParkedMember
        fields = ("id", "member_id", "error", "traceback", "attempts", "first_failed_at", "last_failed_at")


class ParkedMembersReplayOutput(serializers.Serializer):
    replayed = serializers.IntegerField()
    member_ids = serializers.ListField(child=serializers.IntegerField())


@extend_schema(tags=["operations"])
class ParkedMemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Members whose refresh failed, parked so that the others go on; newest first."""

    permission_classes = (permissions_required(VIEW_PARKED),)
    serializer_class = ParkedMemberOutput
    lookup_value_regex = "[0-9]{1,19}"  # anything else is no route: a JSON 404 (cdp.errors.not_found)
    queryset = ParkedMember.objects.filter(replayed_at__isnull=True)

    @extend_schema(request=None, responses={200: ParkedMembersReplayOutput})
    @action(
        detail=True, methods=["post"], permission_classes=(permissions_required(VIEW_PARKED, REPLAY_PARKED),)
    )
    def replay(self, request: Request, pk: str) -> Response:
        """Refresh this member again (after a fix), exactly once: a second call finds it no
        longer parked (404). If it fails again it is parked again, its attempts counted."""
        return _replay(request, ids=[int(pk)])

    @extend_schema(
        request=None, responses={200: ParkedMembersReplayOutput}, operation_id="parked_members_replay_all"
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="replay",
        permission_classes=(permissions_required(VIEW_PARKED, REPLAY_PARKED),),
    )
    def replay_all(self, request: Request) -> Response:
        """Refresh every parked member again, each exactly once."""
        return _replay(request, ids=None)


def _replay(request: Request, *, ids: list[int] | None) -> Response:
    with transaction.atomic():  # never replayed without its audit entry
        # An id past 64 bits names no row (and PostgreSQL would refuse it as a bigint).
        member_ids = parked_members_replay(ids=None if ids is None else [i for i in ids if i <= MAX_BIGINT])
        if not member_ids and ids is not None:
            raise ApiError(
                code="not_found", message="No such parked member (replayed already?).",
                status_code=status.HTTP_404_NOT_FOUND,
            )  # fmt: skip
        if member_ids:
            audit_record(
                user=request.user,
                action=AuditEntry.Action.REPLAY_PARKED,
                member_ids=member_ids,
                channel="api",
                detail="parked members replayed",
            )
            transaction.on_commit(members_refresh_enqueue)
    return Response({"replayed": len(member_ids), "member_ids": member_ids})
