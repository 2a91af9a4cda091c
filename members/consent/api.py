"""Consent in the staff API, under /api/v1/members/{id}/consent/: the consent in force per
purpose now or at any past moment (``?at=``), the history of statements, and recording what a
person told staff (audited)."""

from datetime import datetime

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError
from cdp.pagination import page_serializer, paginated
from cdp.permissions import permissions_required, request_staff
from cdp.scopes import request_scope
from members.consent.models import ConsentStatement
from members.consent.selectors import consent_history, consent_in_force
from members.consent.services import ConsentRefused, consent_record
from members.consent.statements import MAX_VERSION
from members.selectors import member_visible

VIEW_MEMBERS = "members.view_member"
VIEW_CONSENT = "consent.view_consentstatement"
RECORD_CONSENT = "consent.add_consentstatement"
_MEMBER_ID = OpenApiParameter("member_id", OpenApiTypes.INT, OpenApiParameter.PATH)


class StatementOutput(serializers.ModelSerializer):
    recorded_by = serializers.CharField(source="recorded_by.username", allow_null=True, default=None)

    class Meta:
        model = ConsentStatement
        fields = ("id", "purpose", "state", "at", "version", "origin", "event_id", "source_id", "channel",
                  "store_code", "app", "device_id", "recorded_by", "note", "recorded_at")  # fmt: skip


class PurposeOutput(serializers.Serializer):
    purpose = serializers.CharField()
    granted = serializers.BooleanField(help_text="Consent to this purpose is in force (a grant).")
    state = serializers.ChoiceField(
        choices=ConsentStatement.State.choices,
        allow_null=True,
        help_text="The statement in force; null: never stated (not granted).",
    )
    statement = StatementOutput(allow_null=True)


class ConsentOutput(serializers.Serializer):
    member_id = serializers.IntegerField()
    resolved_from = serializers.IntegerField(allow_null=True, help_text="The id asked for, if merged away.")
    at = serializers.DateTimeField(help_text="The moment the consent is shown for.")
    purposes = PurposeOutput(many=True)


class RecordInput(serializers.Serializer):
    purpose = serializers.ChoiceField(choices=settings.CONSENT_PURPOSES)
    state = serializers.ChoiceField(choices=ConsentStatement.State.choices)
    version = serializers.CharField(max_length=MAX_VERSION, required=False, default="", allow_blank=True,
                                    help_text="The version of the wording the person agreed to or refused.")  # fmt: skip
    note = serializers.CharField(max_length=255, required=False, default="", allow_blank=True,
                                 help_text="How the person stated it (at the desk, by phone, in writing).")  # fmt: skip


def _member(request: Request, member_id: int) -> tuple[int, int | None]:
    """The member behind the id (a survivor for an id merged away); a 404 for an unknown one
    and for one the caller's scope does not see (``cdp.scopes``)."""
    member = member_visible(member_id=member_id, scope=request_scope(request))
    if member is None:
        raise ApiError(
            code="not_found", message=f"No member {member_id}.", status_code=status.HTTP_404_NOT_FOUND
        )
    return member.pk, member_id if member.pk != member_id else None


def _moment(request: Request) -> datetime:
    raw = request.query_params.get("at", "")
    if not raw:
        return timezone.now()
    try:
        moment = parse_datetime(raw)
    except ValueError:
        moment = None
    if moment is None or timezone.is_naive(moment):
        raise ApiError(
            code="invalid",
            message="Bad at.",
            errors=[
                FieldError("at", "an ISO 8601 date-time with its offset, e.g. 2026-10-01T08:00:00+08:00")
            ],
        )
    return moment


class MemberConsentView(APIView):
    def get_permissions(self) -> list[BasePermission]:
        wanted = RECORD_CONSENT if self.request.method == "POST" else VIEW_CONSENT
        return [permissions_required(VIEW_MEMBERS, wanted)()]

    @extend_schema(
        parameters=[
            _MEMBER_ID,
            OpenApiParameter("at", OpenApiTypes.DATETIME, description="Show the consent in force then (default: now)."),
        ],
        responses={200: ConsentOutput},
        tags=["members"],
    )  # fmt: skip
    def get(self, request: Request, member_id: int) -> Response:
        """The member's consent per purpose (each configured purpose, in order) as in force now,
        or at ``at``: the latest statement at or before it. An id absorbed by a merge answers
        for its survivor, whose statements include the absorbed member's."""
        pk, resolved_from = _member(request, member_id)
        at = _moment(request)
        purposes = [
            {"purpose": p.purpose, "granted": p.granted, "state": p.statement and p.statement.state,
             "statement": p.statement}
            for p in consent_in_force(member_id=pk, at=at)
        ]  # fmt: skip
        return Response(
            ConsentOutput(
                {"member_id": pk, "resolved_from": resolved_from, "at": at, "purposes": purposes}
            ).data
        )

    @extend_schema(
        parameters=[_MEMBER_ID], request=RecordInput, responses={201: StatementOutput}, tags=["members"]
    )
    def post(self, request: Request, member_id: int) -> Response:
        """Record what the person told staff: a statement at this moment, in the audit log. It is
        in force from now (unless an event dated later says otherwise) and rules that read
        consent follow within seconds."""
        _member(request, member_id)  # an unknown member is a 404 whatever the body
        data = RecordInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            statement = consent_record(
                member_id=member_id, user=request_staff(request), channel="api", **data.validated_data
            )
        except ConsentRefused as refused:
            raise ApiError(
                code="not_found" if refused.status == 404 else "invalid",
                message=refused.reason,
                errors=[FieldError(refused.field, refused.reason)],
                status_code=refused.status,
            ) from refused
        return Response(StatementOutput(statement).data, status=status.HTTP_201_CREATED)


class MemberConsentHistoryView(APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS, VIEW_CONSENT),)

    @extend_schema(
        parameters=[
            _MEMBER_ID,
            OpenApiParameter("purpose", OpenApiTypes.STR, description="Only this purpose's statements."),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(StatementOutput)},
        operation_id="api_v1_members_consent_history_list",
        tags=["members"],
    )
    def get(self, request: Request, member_id: int) -> Response:
        """Every statement the member holds, newest (by event time) first, a page at a time:
        from its own events and the events of members merged into it, and recorded by staff."""
        pk, _ = _member(request, member_id)
        purpose = request.query_params.get("purpose", "")
        if purpose and purpose not in settings.CONSENT_PURPOSES:
            raise ApiError(
                code="invalid",
                message="Bad purpose.",
                errors=[FieldError("purpose", f"one of {', '.join(settings.CONSENT_PURPOSES)}")],
            )
        return paginated(request, self, consent_history(member_id=pk, purpose=purpose), ordering=("-at", "-id"),
                         serialize=lambda page: StatementOutput(page, many=True).data)  # fmt: skip
