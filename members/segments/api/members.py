"""A segment's members, a keyset page at a time, with the fields the caller asks for."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError
from cdp.pagination import CURSOR_HELP, query_int
from cdp.permissions import Unscoped, permissions_required
from cdp.privacy import Masking
from members.aggregates import FIGURE_DIGITS
from members.consent.statements import NO_CONSENT
from members.segments.api import PURPOSE_PARAMETER, VIEW_SEGMENTS, declared_purpose, segment_by_key
from members.segments.exports import (
    FIELDS,
    Field,
    UnknownFields,
    fields_parse,
    row_json,
    segment_rows,
)

FIELDS_PARAMETER = OpenApiParameter(
    "fields",
    OpenApiTypes.STR,
    description="Comma-separated fields for each member, e.g. `phone,email,tier,traits.city`. Every "
    "personal value (phone, email, name, a trait such as `traits.mobile`, a phone or email inside any "
    "trait) is masked unless the role may see contact details (a member without consent to the "
    "purpose is left out whole, and counted in `withheld`). Fields: "
    + " ".join(f"`{name}`: {what}" for name, what in FIELDS.items()),
)


def requested_fields(request: Request) -> tuple[Field, ...]:
    """The ``fields`` query parameter (comma-separated, may repeat), or a 400 naming each
    unknown field."""
    names = [name for value in request.query_params.getlist("fields") for name in value.split(",")]
    try:
        return fields_parse(names)
    except UnknownFields as error:
        raise ApiError(
            code="invalid",
            message=f"Bad fields: {', '.join(error.names)}. Known: {', '.join(FIELDS)}.",
            errors=[FieldError("fields", f"{error.reason}: {name}") for name in error.names],
        ) from error


class SegmentMemberOutput(serializers.Serializer):
    member_id = serializers.IntegerField()
    entered_at = serializers.DateTimeField()
    name = serializers.CharField(required=False, allow_null=True, help_text=FIELDS["name"])
    phone = serializers.CharField(required=False, allow_null=True, help_text=FIELDS["phone"])
    email = serializers.CharField(required=False, allow_null=True, help_text=FIELDS["email"])
    orders = serializers.IntegerField(required=False, help_text=FIELDS["orders"])
    spend = serializers.DecimalField(
        max_digits=FIGURE_DIGITS, decimal_places=2, required=False, help_text=FIELDS["spend"]
    )
    currency = serializers.CharField(required=False, help_text=FIELDS["currency"])
    average_order_value = serializers.DecimalField(
        max_digits=FIGURE_DIGITS,
        decimal_places=2,
        required=False,
        allow_null=True,
        help_text=FIELDS["average_order_value"],
    )
    first_purchase_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text=FIELDS["first_purchase_at"]
    )
    last_purchase_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text=FIELDS["last_purchase_at"]
    )
    last_event_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text=FIELDS["last_event_at"]
    )
    points = serializers.IntegerField(required=False, help_text=FIELDS["points"])
    tier = serializers.CharField(required=False, allow_null=True, help_text=FIELDS["tier"])
    tags = serializers.ListField(child=serializers.CharField(), required=False, help_text=FIELDS["tags"])


class WithheldOutput(serializers.Serializer):
    no_consent = serializers.IntegerField(
        help_text="Members of this page left out: no consent to the purpose in force."
    )


class SegmentMembersPage(serializers.Serializer):
    results = SegmentMemberOutput(
        many=True,
        help_text="Each member with the fields asked for; also identifier types by name and "
        "`traits.<key>` / `identifiers.<type>` keys when asked. Members left out for consent make "
        "a page shorter than page_size: page on while next_cursor is not null.",
    )
    next_cursor = serializers.IntegerField(allow_null=True, help_text=CURSOR_HELP)
    purpose = serializers.CharField(help_text="The purpose the page was read for.")
    withheld = WithheldOutput(help_text="Members of this page left out, by reason.")


class SegmentMembersView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS), Unscoped)

    @extend_schema(
        parameters=[OpenApiParameter("cursor", OpenApiTypes.INT), OpenApiParameter("page_size", OpenApiTypes.INT),
                    FIELDS_PARAMETER, PURPOSE_PARAMETER],
        responses={200: SegmentMembersPage}, tags=["segments"],
    )  # fmt: skip
    def get(self, request: Request, key: str) -> Response:
        """The segment's members by member id, a keyset page at a time: stable while members
        enter and leave (no offsets). One query per page whatever the fields; a page showing
        phone or email in full is in the audit log (with how many it left out). A member
        without consent to the declared purpose at the moment of the read is left out and
        counted."""
        segment = segment_by_key(key)
        size: int = query_int(request, "page_size", default=1000, low=1, high=10_000)
        after: int = query_int(request, "cursor", default=0, low=0, high=2**63 - 1)
        fields = requested_fields(request)
        purpose, purposes = declared_purpose(request.query_params.get("purpose"))
        masking = Masking(request.user, channel="api", detail=request.get_full_path())
        rows = segment_rows(
            segment=segment, fields=fields, after=after, size=size + 1, masking=masking, purposes=purposes
        )
        page = rows[:size]
        given = [row for row in page if row.consented]
        withheld = len(page) - len(given)
        masking.detail = f"{masking.detail} (withheld {NO_CONSENT}={withheld})"
        masking.audit(row.member_id for row in given if row.contact_shown)
        return Response(
            {
                "results": [row_json(row) for row in given],
                "next_cursor": page[-1].member_id if len(rows) > size else None,
                "purpose": purpose,
                "withheld": {NO_CONSENT: withheld},
            }
        )
