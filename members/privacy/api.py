"""Staff API for people's requests about their data (the privacy officer and admins):

- ``POST /api/v1/members/{id}/erase/`` receives an erasure request: ``202`` with the job, done
  by a worker within seconds (``GET /api/v1/privacy/requests/{id}/`` shows its status and, once
  done, what was erased per data class);
- ``GET /api/v1/members/{id}/export/`` answers an access request: everything held about the
  person, as JSON (the console offers it as a file), recorded as a request and audited;
- ``GET /api/v1/privacy/requests/?kind=&status=`` lists the requests, newest first.
"""

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.db import MAX_BIGINT
from cdp.errors import ApiError, FieldError
from cdp.permissions import Unscoped, permissions_required
from members.privacy.models import PrivacyRequest
from members.privacy.selectors import privacy_requests
from members.privacy.services import ErasureRefused, access_request, erasure_request

ERASE, EXPORT, VIEW_REQUESTS = "privacy.erase_member", "privacy.export_member", "privacy.view_privacyrequest"


class PrivacyRequestOutput(serializers.ModelSerializer):
    requested_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = PrivacyRequest
        fields = ("id", "kind", "status", "member_id", "requested_by", "reference", "counts", "error",
                  "received_at", "done_at")  # fmt: skip


class EraseInput(serializers.Serializer):
    reference = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True,
        help_text="Your reference for the request (a ticket number). No personal data: it is kept.",
    )  # fmt: skip


_MEMBER = OpenApiParameter("member_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="A member id.")


def _no_member(member_id: int) -> ApiError:
    return ApiError(
        code="not_found", message=f"No member {member_id}.", status_code=status.HTTP_404_NOT_FOUND
    )


class MemberEraseView(APIView):
    permission_classes = (permissions_required(ERASE), Unscoped)

    @extend_schema(parameters=[_MEMBER], request=EraseInput, responses={202: PrivacyRequestOutput},
                   tags=["privacy"])  # fmt: skip
    def post(self, request: Request, member_id: int) -> Response:
        """Erase a person (the member, and the members merged into it): a job, carried out by a
        worker once received. An id absorbed by a merge stands for its survivor."""
        if member_id > MAX_BIGINT:
            raise _no_member(member_id)
        data = EraseInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = erasure_request(
                member_id=member_id, user=request.user, reference=data.validated_data["reference"]
            )
        except ErasureRefused as exc:
            raise ApiError(
                code="not_found" if exc.status == 404 else "invalid",
                message=str(exc),
                errors=[FieldError(exc.field, str(exc))],
                status_code=exc.status,
            ) from exc
        return Response(PrivacyRequestOutput(job).data, status=status.HTTP_202_ACCEPTED)


class MemberExportView(APIView):
    permission_classes = (permissions_required(EXPORT), Unscoped)

    @extend_schema(parameters=[_MEMBER], responses={200: OpenApiTypes.OBJECT}, tags=["privacy"])
    def get(self, request: Request, member_id: int) -> Response:
        """Everything held about a person, unmasked: profile, traits, identifiers, every event
        as it was sent, orders, points ledger, coupons, tags, segments, merges and splits, who
        saw or exported their data (and consent, where configured). Audited."""
        if member_id > MAX_BIGINT:
            raise _no_member(member_id)
        export = access_request(member_id=member_id, user=request.user, channel="api")
        if export is None:
            raise _no_member(member_id)
        return Response(export)


class RequestsFilter(serializers.Serializer):
    kind = serializers.ChoiceField(choices=PrivacyRequest.Kind.choices, required=False)
    status = serializers.ChoiceField(choices=PrivacyRequest.Status.choices, required=False)


@extend_schema(tags=["privacy"])
class PrivacyRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """People's requests (erasure, access) and retention's erasures, newest first."""

    permission_classes = (permissions_required(VIEW_REQUESTS), Unscoped)
    serializer_class = PrivacyRequestOutput
    lookup_value_regex = "[0-9]{1,19}"  # anything else is no route: a JSON 404 (cdp.errors.not_found)

    def get_queryset(self) -> QuerySet[PrivacyRequest]:
        given = RequestsFilter(data=self.request.query_params)
        given.is_valid(raise_exception=True)
        return privacy_requests(**given.validated_data)

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, enum=PrivacyRequest.Kind.values),
            OpenApiParameter("status", OpenApiTypes.STR, enum=PrivacyRequest.Status.values),
        ]
    )
    def list(self, request: Request) -> Response:
        return super().list(request)
