"""Staff API of the members app, mounted at /api/v1/members/: lookup by any identifier, the
360 view, the cross-channel timeline and split.

Roles (``cdp.roles``): agents, managers and admins see members; only managers and admins see
personal data in full (agents get every phone, email, name and address masked, at any depth
of traits and events: ``cdp.privacy``) and may split; marketing reaches members only through
segments (403 here). A user scoped to stores or channels (``cdp.scopes``) finds and opens only
members seen there (any other id answers 404, as an unknown one), with those orders and events.
An id absorbed by a merge answers with its survivor's profile: ``id`` is the survivor's and
``resolved_from`` the id asked for (no redirect, so one round trip).
"""

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from cdp.db import MAX_BIGINT
from cdp.errors import ApiError, FieldError
from cdp.models import AuditEntry
from cdp.pagination import IdCursorPagination, page_json, page_serializer
from cdp.permissions import permissions_required, request_staff
from cdp.privacy import Masking
from cdp.rendering import rendered, rendered_each
from cdp.scopes import request_scope
from cdp.services import audit_record
from events.models import Channel
from events.selectors import source_names
from identity.identifiers import BlockedIdentifier, InvalidIdentifier
from identity.selectors import identifier_texts_opened
from identity.services import SplitRefused, member_split
from members.aggregates import FIGURE_DIGITS
from members.marks import members_refresh_enqueue
from members.presentation import profile_json, summary_json, timeline_json
from members.selectors import (
    LOOKUP_FIELDS,
    member_profile,
    member_summaries,
    member_timeline,
    member_visible,
    members_find,
    members_search,
)

VIEW_MEMBERS = "members.view_member"
SPLIT_MEMBERS = "members.split_member"


# --- output shapes: the schema documents them and every response is rendered through them ---


class SummaryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField(allow_null=True)
    phone = serializers.CharField(allow_null=True, help_text="Masked for crm_agent.")
    email = serializers.CharField(allow_null=True, help_text="Masked for crm_agent.")
    orders = serializers.IntegerField()
    spend = serializers.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)
    currency = serializers.CharField()
    last_event_at = serializers.DateTimeField(allow_null=True)


@extend_schema_serializer(many=False)  # a page object, though the lookup is the viewset's list
class LookupOutput(serializers.Serializer):
    results = SummaryOutput(many=True)
    next_cursor = serializers.CharField(allow_null=True, help_text="Always null: every match is in the page.")


class IdentifierOutput(serializers.Serializer):
    value = serializers.CharField()
    last_seen_at = serializers.DateTimeField(allow_null=True)
    merges = serializers.BooleanField(help_text="False for a type that never joins members.")


class TraitOutput(serializers.Serializer):
    value = serializers.JSONField()
    observed_at = serializers.DateTimeField(help_text="Event time of the event that stated it.")
    channel = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named "source" shadows the stubs' Field.source


class ChannelFiguresOutput(serializers.Serializer):
    orders = serializers.IntegerField()
    spend = serializers.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)
    events = serializers.IntegerField()


class AggregatesOutput(serializers.Serializer):
    currency = serializers.CharField()
    orders = serializers.IntegerField()
    spend = serializers.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2, help_text="Net of refunds.")
    refunded = serializers.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)
    average_order_value = serializers.DecimalField(
        max_digits=FIGURE_DIGITS, decimal_places=2, allow_null=True
    )
    first_purchase_at = serializers.DateTimeField(allow_null=True)
    last_purchase_at = serializers.DateTimeField(allow_null=True)
    by_channel = serializers.DictField(child=ChannelFiguresOutput())
    stores_visited = serializers.ListField(child=serializers.CharField())
    orders_in_other_currencies = serializers.IntegerField()
    events = serializers.IntegerField()
    last_event_at = serializers.DateTimeField(allow_null=True)
    computed_at = serializers.DateTimeField()


class OrderOutput(serializers.Serializer):
    order_id = serializers.CharField()
    placed_at = serializers.DateTimeField()
    channel = serializers.CharField()
    store_code = serializers.CharField()
    currency = serializers.CharField()
    total = serializers.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)
    refunded = serializers.DecimalField(max_digits=FIGURE_DIGITS, decimal_places=2)


class HistoryOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["merge", "split"])
    at = serializers.DateTimeField()
    survivor_id = serializers.IntegerField(allow_null=True)
    absorbed_id = serializers.IntegerField(allow_null=True)
    identifiers = serializers.ListField(
        child=serializers.CharField(),
        help_text="Through what the event linked them (or what a split took off): only those the "
        "member holds now, never another person's.",
    )
    cause = serializers.CharField(help_text="event, replay (a late event re-resolved) or staff")
    event_id = serializers.IntegerField(
        allow_null=True, help_text="The event that linked them; null when it is not this member's now."
    )
    staff = serializers.CharField()
    reason = serializers.CharField()
    resulting_members = serializers.ListField(child=serializers.IntegerField())


class LoyaltySummaryOutput(serializers.Serializer):
    balance = serializers.IntegerField(help_text="Points: the sum of the ledger (details at points/).")
    tier = serializers.CharField(allow_null=True)
    tier_name = serializers.CharField(allow_null=True)
    tier_since = serializers.DateTimeField(allow_null=True)
    next_expiry_at = serializers.DateTimeField(allow_null=True)
    next_expiry_points = serializers.IntegerField()


class MemberTagOutput(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["manual", "rule", "computed"])
    added_at = serializers.DateTimeField()
    added_by = serializers.CharField(allow_null=True, help_text="The staff user who added a manual tag.")


class MemberSegmentOutput(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    entered_at = serializers.DateTimeField()


class GroupOutput(serializers.Serializer):
    group_id = serializers.CharField()
    name = serializers.JSONField(allow_null=True, help_text="The group's name trait, if it has one.")
    traits = serializers.DictField(help_text="The group's traits: latest value per trait by event time.")
    first_call_at = serializers.DateTimeField(help_text="The member's first group call naming it.")
    last_call_at = serializers.DateTimeField(help_text="The member's latest group call naming it.")


class ProfileOutput(serializers.Serializer):
    id = serializers.IntegerField()
    resolved_from = serializers.IntegerField(allow_null=True, help_text="The id asked for, if merged away.")
    first_event_at = serializers.DateTimeField()
    last_event_at = serializers.DateTimeField()
    identifiers = serializers.DictField(child=IdentifierOutput(many=True), help_text="By type.")
    traits = serializers.DictField(child=TraitOutput())
    aggregates = AggregatesOutput(allow_null=True)
    recent_orders = OrderOutput(many=True)
    history = HistoryOutput(many=True)
    loyalty = LoyaltySummaryOutput(allow_null=True)
    tags = MemberTagOutput(many=True)
    segments = MemberSegmentOutput(many=True, help_text="The segments the member is in now.")
    groups = GroupOutput(many=True, help_text="Groups (accounts, companies, clubs) from group calls.")


class TimelineEventOutput(serializers.Serializer):
    id = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    type = serializers.CharField()
    event = serializers.CharField()
    name = serializers.CharField()
    channel = serializers.CharField()
    store_code = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named "source" shadows the stubs' Field.source
    traits = serializers.JSONField()
    properties = serializers.JSONField()


class SplitInput(serializers.Serializer):
    identifiers = serializers.ListField(
        child=serializers.CharField(), allow_empty=False, help_text='"type:value", e.g. "phone:13800138000".'
    )
    reason = serializers.CharField()


class SplitOutput(serializers.Serializer):
    split_id = serializers.IntegerField()
    member_id = serializers.IntegerField()
    identifiers = serializers.ListField(child=serializers.CharField())
    resulting_members = serializers.ListField(child=serializers.IntegerField())


class TimelinePagination(IdCursorPagination):
    """Newest first, keyset on the event time (ties broken by id)."""

    ordering = ("-timestamp", "-id")  # type: ignore[assignment]  # DRF takes a tuple too; its stubs say str
    max_page_size = 500


_LOOKUP_PARAMETERS = [
    OpenApiParameter(name, OpenApiTypes.STR, description=f"Find by {name.replace('_', ' ')}")
    for name in LOOKUP_FIELDS
] + [
    OpenApiParameter(
        "q",
        OpenApiTypes.STR,
        description="A name: whole, a word of it, or a family name in Chinese characters (names are sealed at rest: no part of a word)",
    )
]


_MEMBER_ID = OpenApiParameter(
    "id",
    OpenApiTypes.INT,
    OpenApiParameter.PATH,
    description="A member id (one absorbed by a merge works too).",
)


def _unknown_member(member_id: int) -> ApiError:
    return ApiError(
        code="not_found", message=f"No member {member_id}.", status_code=status.HTTP_404_NOT_FOUND
    )


class MemberViewSet(viewsets.ViewSet):
    permission_classes = (permissions_required(VIEW_MEMBERS),)
    lookup_value_regex = "[0-9]{1,19}"  # anything else is no route: a JSON 404 (cdp.errors.not_found)

    @extend_schema(parameters=_LOOKUP_PARAMETERS, responses={200: LookupOutput}, tags=["members"])
    def list(self, request: Request) -> Response:
        """Find members by exactly one identifier (normalized as at ingestion), an order
        number, or part of a name (``q``)."""
        given = {k: v for k in (*LOOKUP_FIELDS, "q") if (v := request.query_params.get(k, "")).strip()}
        if len(given) != 1:
            raise ApiError(
                code="invalid",
                message="Give exactly one of: " + ", ".join((*LOOKUP_FIELDS, "q")) + ".",
                errors=[FieldError(k, "only one lookup at a time") for k in sorted(given)]
                or [FieldError("phone", "give an identifier to look up")],
            )
        field, value = next(iter(given.items()))
        scope = request_scope(request)
        try:
            found = (
                members_search(text=value, scope=scope)
                if field == "q"
                else members_find(field=field, value=value, scope=scope)
            )
        except (InvalidIdentifier, BlockedIdentifier) as exc:
            raise ApiError(
                code="invalid",
                message=f"That is not a {field.replace('_', ' ')} we can look up.",
                errors=[FieldError(field, str(exc))],
            ) from exc
        masking = Masking(request.user, channel="api", detail=request.get_full_path())
        # Every match in one page (a lookup finds a handful): next_cursor is always null.
        data = rendered(LookupOutput, page_json(summary_json(member_summaries(found, scope), masking), None))
        masking.audit(found)
        return Response(data)

    @extend_schema(parameters=[_MEMBER_ID], responses={200: ProfileOutput}, tags=["members"])
    def retrieve(self, request: Request, pk: str) -> Response:
        """The 360 view. An id absorbed by a merge gives its survivor's profile."""
        member_id = _member_id(pk)
        profile = member_profile(member_id=member_id, scope=request_scope(request))
        if profile is None:
            raise _unknown_member(member_id)
        masking = Masking(request.user, channel="api", detail=request.get_full_path())
        data = rendered(ProfileOutput, profile_json(profile, masking))
        masking.audit([profile.member.pk])
        return Response(data)

    @extend_schema(
        parameters=[
            _MEMBER_ID,
            OpenApiParameter("channel", OpenApiTypes.STR, enum=Channel.values),
            OpenApiParameter("event", OpenApiTypes.STR, description="Track event name, e.g. Order Completed"),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(TimelineEventOutput)},
        operation_id="api_v1_members_events_list",
        tags=["members"],
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Response:
        """The cross-channel timeline, newest first, cursor paginated."""
        member_id = _member_id(pk)
        scope = request_scope(request)
        member = member_visible(member_id=member_id, scope=scope)
        if member is None:
            raise _unknown_member(member_id)
        channel = request.query_params.get("channel", "")
        if channel and channel not in Channel.values:
            raise ApiError(
                code="invalid",
                message="Unknown channel.",
                errors=[FieldError("channel", f"one of {', '.join(Channel.values)}")],
            )
        paginator = TimelinePagination()
        page = paginator.paginate_queryset(
            member_timeline(
                member_id=member.pk, channel=channel, event=request.query_params.get("event", ""), scope=scope
            ),
            request,
            view=self,
        )
        assert page is not None  # None only without a page size, and TimelinePagination has one
        names = source_names(e.source_id for e in page)
        masking = Masking(request.user, channel="api", detail=request.get_full_path())
        data = rendered_each(TimelineEventOutput, timeline_json(page, masking, names))
        masking.audit([member.pk])
        return paginator.get_paginated_response(data)

    @extend_schema(
        parameters=[_MEMBER_ID], request=SplitInput, responses={200: SplitOutput}, tags=["members"]
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=(permissions_required(VIEW_MEMBERS, SPLIT_MEMBERS),),
    )
    def split(self, request: Request, pk: str) -> Response:
        """Split a wrong merge: the identifiers given belong to another person. The events are
        re-resolved at once; the profiles are refreshed by the members refresh within seconds."""
        member_id = _member_id(pk)
        member = member_visible(member_id=member_id, scope=request_scope(request))
        if member is None:
            raise _unknown_member(member_id)
        data = SplitInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            with transaction.atomic():  # a split is never made without its audit entry
                record = member_split(
                    member_id=member.pk,
                    identifiers=data.validated_data["identifiers"],
                    reason=data.validated_data["reason"],
                    staff=request_staff(request),
                )
                audit_record(
                    user=request.user,
                    action=AuditEntry.Action.SPLIT_MEMBER,
                    member_ids=[member.pk, *record.resulting_members],
                    channel="api",
                    detail=record.reason_text,
                )
        except SplitRefused as exc:
            raise ApiError(
                code="invalid", message=str(exc), errors=[FieldError(exc.field, str(exc))]
            ) from exc
        transaction.on_commit(members_refresh_enqueue)  # identity's changes go to the refresh
        opened = identifier_texts_opened(record.identifiers)  # a phone or an email: its value, not its index
        return Response(
            SplitOutput(
                {
                    "split_id": record.pk,
                    "member_id": record.member_id,
                    "identifiers": [opened.get(t, t) for t in record.identifiers],
                    "resulting_members": record.resulting_members,
                }
            ).data
        )


def _member_id(pk: str) -> int:
    """The id of the path (ASCII digits: ``lookup_value_regex``); one past any id is unknown."""
    member_id = int(pk)
    if member_id > MAX_BIGINT:
        raise _unknown_member(member_id)
    return member_id
