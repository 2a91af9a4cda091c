"""Loyalty API under /api/v1/: a member's points, staff adjustments, points and coupons at
checkout (POS and online, the same endpoints), campaigns, and members about to lose points.

Who may do what (``cdp.roles``): anyone who sees members sees their points; crm_manager
adjusts; the checkout role (tills, web checkout) spends points and redeems coupons; marketing
creates campaigns and issues coupons. Writes that a client may retry take an
``Idempotency-Key`` header: the same key gives the same answer, never a second entry.
"""

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.db import MAX_BIGINT
from cdp.errors import ApiError, FieldError
from cdp.models import AuditEntry
from cdp.pagination import CURSOR_HELP, cursor_parameter, page_serializer, paginated, query_cursor, query_int
from cdp.permissions import Unscoped, permissions_required, request_staff
from cdp.schema import error_response
from cdp.scopes import UNSCOPED, request_scope
from cdp.services import audit_record
from events.models import Channel
from members.consent.statements import ALL_MARKETING
from members.loyalty.coupons import CouponRefused, coupon_redeem, coupon_release, coupons_issue_checked
from members.loyalty.models import Coupon, CouponCampaign, CouponRedemption, PointsEntry
from members.loyalty.points import MAX_POINTS_MOVE
from members.loyalty.presentation import coupon_json, entry_json, points_json
from members.loyalty.selectors import coupon_redemption_active, ledger_page, members_expiring, points_summary
from members.loyalty.services import PointsRefused, points_adjust, points_redeem
from members.models import Member
from members.segments.api import PURPOSE_HELP, declared_purpose
from members.segments.models import Segment
from members.selectors import member_visible

VIEW_MEMBERS = "members.view_member"
ADJUST_POINTS = "loyalty.adjust_points"
REDEEM_POINTS = "loyalty.redeem_points"
REDEEM_COUPONS = "loyalty.redeem_coupon"
ISSUE_COUPONS = "loyalty.add_coupon"
MANAGE_CAMPAIGNS = "loyalty.add_couponcampaign"
VIEW_CAMPAIGNS = "loyalty.view_couponcampaign"

_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True,
    description="Unique per request the client means once (e.g. till id + receipt number). A retry "
    "with the same key answers with the first result and writes nothing.",
)  # fmt: skip
_MEMBER_ID = OpenApiParameter("member_id", OpenApiTypes.INT, OpenApiParameter.PATH)
_CODE_LENGTH: int = Coupon._meta.get_field("code").max_length or 0  # a CharField's: never 0


# --- shapes ---


class LotOutput(serializers.Serializer):
    points = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class TierOutput(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    since = serializers.DateTimeField(allow_null=True)


class TierChangeOutput(serializers.Serializer):
    at = serializers.DateTimeField()
    from_tier = serializers.CharField()
    to_tier = serializers.CharField()
    reason = serializers.CharField()


class EntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    points = serializers.IntegerField()
    reason = serializers.CharField()
    at = serializers.DateTimeField()
    order_id = serializers.CharField()
    channel = serializers.CharField()
    event_id = serializers.IntegerField(allow_null=True)
    staff = serializers.CharField(allow_null=True)
    available_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    key = serializers.CharField(help_text="Idempotency key, named after the cause.")
    balance_after = serializers.IntegerField(
        required=False,
        help_text="In a ledger page: the balance once this entry and every earlier one counted.",
    )


class CouponOutput(serializers.Serializer):
    code = serializers.CharField()
    campaign = serializers.CharField()
    benefit = serializers.CharField()
    value = serializers.DecimalField(max_digits=12, decimal_places=2)
    minimum_spend = serializers.DecimalField(max_digits=12, decimal_places=2)
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField()
    channels = serializers.ListField(child=serializers.CharField(), help_text="Empty: every channel.")
    member_id = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=["usable", "redeemed", "expired", "not_yet_valid"])
    redeemed_order_id = serializers.CharField(allow_null=True)


class PointsOutput(serializers.Serializer):
    member_id = serializers.IntegerField()
    balance = serializers.IntegerField(help_text="The sum of the ledger.")
    available = serializers.IntegerField(help_text="Spendable now: the balance less pending points.")
    pending = serializers.IntegerField(help_text="Earned, not spendable until the returns window ends.")
    expiring = LotOutput(many=True, help_text="Points expiring within expiring_within_days, soonest first.")
    expiring_within_days = serializers.IntegerField()
    tier = TierOutput(allow_null=True)
    tier_changes = TierChangeOutput(many=True)
    coupons = CouponOutput(many=True)
    ledger = EntryOutput(
        many=True, help_text="Newest first by when each took effect (at, then id), with the running balance."
    )
    next_cursor = serializers.IntegerField(allow_null=True, help_text=CURSOR_HELP)


class AdjustInput(serializers.Serializer):
    points = serializers.IntegerField(
        min_value=-MAX_POINTS_MOVE,
        max_value=MAX_POINTS_MOVE,
        help_text="Positive to add, negative to take away.",
    )
    reason = serializers.CharField(max_length=400)


class RedeemPointsInput(serializers.Serializer):
    points = serializers.IntegerField(min_value=1, max_value=MAX_POINTS_MOVE)
    order_id = serializers.CharField(max_length=255)
    channel = serializers.ChoiceField(choices=Channel.values)


class RedeemCouponInput(serializers.Serializer):
    order_id = serializers.CharField(max_length=255)
    channel = serializers.ChoiceField(choices=Channel.values)
    order_total = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    member_id = serializers.IntegerField(
        min_value=1,
        max_value=MAX_BIGINT,
        required=False,
        help_text="Required for a coupon issued to a member.",
    )


class RedemptionOutput(serializers.Serializer):
    code = serializers.CharField()
    order_id = serializers.CharField()
    channel = serializers.CharField()
    discount = serializers.DecimalField(max_digits=14, decimal_places=2)
    redeemed_at = serializers.DateTimeField()
    released_at = serializers.DateTimeField(allow_null=True)
    repeated = serializers.BooleanField(help_text="True: a retry; the redemption was made before.")


class ReleaseCouponInput(serializers.Serializer):
    order_id = serializers.CharField(max_length=255)
    reason = serializers.CharField(max_length=200, default="order refunded")


class CampaignInput(serializers.ModelSerializer):
    class Meta:
        model = CouponCampaign
        fields = (
            "name",
            "benefit",
            "value",
            "currency",
            "minimum_spend",
            "valid_from",
            "valid_until",
            "channels",
        )

    def validate_channels(self, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(Channel.values))
        if unknown:
            raise serializers.ValidationError(
                f"unknown channel(s) {', '.join(unknown)}; one of {', '.join(Channel.values)}"
            )
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs["valid_from"] >= attrs["valid_until"]:
            raise serializers.ValidationError({"valid_until": "must be after valid_from"})
        if attrs["benefit"] == CouponCampaign.Benefit.PERCENT and not 0 < attrs["value"] <= 100:
            raise serializers.ValidationError({"value": "a percentage between 0 and 100"})
        if attrs["value"] <= 0:
            raise serializers.ValidationError({"value": "must be positive"})
        return attrs


class CampaignOutput(serializers.ModelSerializer):
    issued = serializers.IntegerField(source="issued_count", read_only=True)

    class Meta:
        model = CouponCampaign
        fields = ("id", "name", "benefit", "value", "currency", "minimum_spend", "valid_from", "valid_until",
                  "channels", "created_at", "issued")  # fmt: skip


class IssueInput(serializers.Serializer):
    member_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_BIGINT),
        allow_empty=False,
        max_length=100_000,
        required=False,
    )
    segment = serializers.SlugField(required=False, help_text="Issue to every member of this segment now.")
    purpose = serializers.CharField(
        required=False, max_length=64,
        help_text=PURPOSE_HELP.replace("when the rows are read", "now")
        + " Issuing to a segment always checks (marketing by default); to member_ids only when a purpose is given.",
    )  # fmt: skip

    def validate(self, attrs: dict) -> dict:
        if ("member_ids" in attrs) == ("segment" in attrs):
            raise serializers.ValidationError({"member_ids": "give member_ids or segment, one of them"})
        if "segment" in attrs and not Segment.objects.filter(key=attrs["segment"]).exists():
            raise serializers.ValidationError({"segment": f"no segment {attrs['segment']!r}"})
        return attrs


class IssueWithheldOutput(serializers.Serializer):
    no_consent = serializers.IntegerField(help_text="Members skipped: no consent to the purpose in force.")


class IssueOutput(serializers.Serializer):
    issued = serializers.IntegerField(help_text="Coupons issued now; members who had one get none again.")
    purpose = serializers.CharField(allow_null=True, help_text="The purpose checked (null: none was).")
    withheld = IssueWithheldOutput(help_text="Members given no coupon, by reason.")


class ExpiringOutput(serializers.Serializer):
    member_id = serializers.IntegerField()
    points = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    balance = serializers.IntegerField()


class ExpiringPageOutput(serializers.Serializer):
    results = ExpiringOutput(many=True)
    next_cursor = serializers.IntegerField(allow_null=True, help_text=CURSOR_HELP)


# --- views ---


def _active_member(member_id: int, request: Request | None = None) -> Member:
    """The active member of the path; with ``request``, one its user's scope may see
    (``cdp.scopes``: any other answers 404, as an unknown one). Checkout acts on whoever is at
    the till or the web checkout, wherever they were seen before: no request, no scope."""
    scope = request_scope(request) if request is not None else UNSCOPED
    member = member_visible(member_id=member_id, scope=scope)
    if member is None:
        raise ApiError(
            code="not_found", message=f"No member {member_id}.", status_code=status.HTTP_404_NOT_FOUND
        )
    return member


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > 200:
        raise ApiError(
            code="invalid", message="An Idempotency-Key header is required.",
            errors=[FieldError("Idempotency-Key", "a unique key per request, up to 200 characters")],
        )  # fmt: skip
    return key


def _coupon_code(code: str) -> str:
    """The code from the path, or a 404 when no coupon can have it (too long, control
    characters), before anything else is looked at."""
    normalized = code.strip().upper()
    if not 0 < len(normalized) <= _CODE_LENGTH or not normalized.isprintable():
        raise ApiError(code="not_found", message="No such coupon.", status_code=status.HTTP_404_NOT_FOUND)
    return normalized


def _refused(exc: PointsRefused | CouponRefused) -> ApiError:
    code = {400: "invalid", 404: "not_found", 409: "conflict"}.get(exc.status, "refused")
    return ApiError(
        code=code, message=exc.reason, errors=[FieldError(exc.field, exc.reason)], status_code=exc.status
    )


class PointsView(APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS),)

    @extend_schema(
        parameters=[_MEMBER_ID, cursor_parameter("before"),
                    OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: PointsOutput}, tags=["loyalty"],
    )  # fmt: skip
    def get(self, request: Request, member_id: int) -> Response:
        """A member's points: balance, spendable and pending, what expires soon, tier, coupons,
        and the ledger newest first by time with a running balance (keyset: ``before`` = the
        last entry id of the page)."""
        member = _active_member(member_id, request)
        size = query_int(request, "page_size", default=50, low=1, high=500)
        before = query_cursor(request, legacy="before")
        entries = ledger_page(member_id=member.pk, before=before, size=size + 1)
        page, more = entries[:size], len(entries) > size
        summary = points_summary(member_id=member.pk)
        return Response(PointsOutput(points_json(member.pk, summary, page, more=more)).data)


class PointsAdjustView(APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS, ADJUST_POINTS),)

    @extend_schema(parameters=[_MEMBER_ID, _IDEMPOTENCY_KEY], request=AdjustInput,
                   responses={201: EntryOutput, 200: EntryOutput,
                              422: error_response("Nothing to do: 0 points, or no reason given.")},
                   tags=["loyalty"])  # fmt: skip
    def post(self, request: Request, member_id: int) -> Response:
        """Add or take away points by hand, with a reason (crm_manager). 201 when written, 200
        for a retry of the same Idempotency-Key. In the audit log (who, the member, the points,
        the reason, from where)."""
        member = _active_member(member_id, request)
        data = AdjustInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            with transaction.atomic():  # an adjustment is never made without its audit entry
                entry, created = points_adjust(
                    member=member, points=data.validated_data["points"], reason=data.validated_data["reason"],
                    idempotency_key=_idempotency_key(request), user=request.user,
                )  # fmt: skip
                if created:
                    audit_record(
                        user=request.user, action=AuditEntry.Action.ADJUST_POINTS, member_ids=[member.pk],
                        channel="api", detail=f"{entry.points:+d} points: {entry.reason}",
                    )  # fmt: skip
        except PointsRefused as exc:
            raise _refused(exc) from exc
        return _entry_response(entry, created)


class PointsRedeemView(APIView):
    permission_classes = (permissions_required(REDEEM_POINTS),)

    @extend_schema(parameters=[_MEMBER_ID, _IDEMPOTENCY_KEY], request=RedeemPointsInput,
                   responses={201: EntryOutput, 200: EntryOutput}, tags=["loyalty"])  # fmt: skip
    def post(self, request: Request, member_id: int) -> Response:
        """Spend available points on an order, at a till or an online checkout (409 when the
        member has fewer available points)."""
        member = _active_member(member_id)
        data = RedeemPointsInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            entry, created = points_redeem(
                member=member, points=data.validated_data["points"], order_id=data.validated_data["order_id"],
                channel=data.validated_data["channel"], idempotency_key=_idempotency_key(request), user=request.user,
            )  # fmt: skip
        except PointsRefused as exc:
            raise _refused(exc) from exc
        return _entry_response(entry, created)


def _entry_response(entry: PointsEntry, created: bool) -> Response:
    return Response(
        EntryOutput(entry_json(entry)).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
    )


class CouponView(APIView):
    permission_classes = (permissions_required(REDEEM_COUPONS),)

    @extend_schema(responses={200: CouponOutput}, tags=["loyalty"])
    def get(self, request: Request, code: str) -> Response:
        """A coupon's terms and whether it can be used now."""
        coupon = Coupon.objects.select_related("campaign").filter(code=_coupon_code(code)).first()
        if coupon is None:
            raise ApiError(code="not_found", message="No such coupon.", status_code=status.HTTP_404_NOT_FOUND)
        return Response(
            CouponOutput(coupon_json(coupon, coupon_redemption_active(coupon=coupon), timezone.now())).data
        )


class CouponRedeemView(APIView):
    permission_classes = (permissions_required(REDEEM_COUPONS),)

    @extend_schema(request=RedeemCouponInput, responses={201: RedemptionOutput, 200: RedemptionOutput,
                   422: error_response("Not usable on this order: expired, not yet valid, another member's, "
                                       "another channel, below the minimum spend.")},
                   tags=["loyalty"])  # fmt: skip
    def post(self, request: Request, code: str) -> Response:
        """Use a coupon on an order, exactly once whatever the channel: a second till gets 409
        naming the order it went to; a retry for the same order and channel gets 200 and the
        same redemption. Refused with 422 and the reason when expired, not yet valid, for
        another member, another channel, or below the minimum spend."""
        code = _coupon_code(code)
        data = RedeemCouponInput(data=request.data)
        data.is_valid(raise_exception=True)
        member = (
            _active_member(data.validated_data["member_id"]) if "member_id" in data.validated_data else None
        )
        try:
            done = coupon_redeem(
                code=code, order_id=data.validated_data["order_id"], channel=data.validated_data["channel"],
                order_total=data.validated_data["order_total"], member=member, user=request.user,
            )  # fmt: skip
        except CouponRefused as exc:
            raise _refused(exc) from exc
        return Response(
            RedemptionOutput(_redemption_json(done.redemption, code, repeated=not done.created)).data,
            status=status.HTTP_201_CREATED if done.created else status.HTTP_200_OK,
        )


class CouponReleaseView(APIView):
    permission_classes = (permissions_required(REDEEM_COUPONS),)

    @extend_schema(request=ReleaseCouponInput, responses={200: RedemptionOutput}, tags=["loyalty"])
    def post(self, request: Request, code: str) -> Response:
        """Undo a redemption (the order was refunded or cancelled): the coupon can be used again.
        A full ``Order Refunded`` event releases it on its own."""
        code = _coupon_code(code)
        data = ReleaseCouponInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            redemption = coupon_release(code=code, order_id=data.validated_data["order_id"],
                                        reason=data.validated_data["reason"])  # fmt: skip
        except CouponRefused as exc:
            raise _refused(exc) from exc
        return Response(RedemptionOutput(_redemption_json(redemption, code, repeated=False)).data)


def _redemption_json(redemption: CouponRedemption, code: str, *, repeated: bool) -> dict:
    return {
        "code": code.strip().upper(),
        "order_id": redemption.order_id,
        "channel": redemption.channel,
        "discount": redemption.discount,
        "redeemed_at": redemption.redeemed_at,
        "released_at": redemption.released_at,
        "repeated": repeated,
    }


class CampaignsView(APIView):
    def get_permissions(self) -> list:
        wanted = VIEW_CAMPAIGNS if self.request.method == "GET" else MANAGE_CAMPAIGNS
        return [permissions_required(wanted)()]

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(CampaignOutput)},
        operation_id="api_v1_campaigns_list",
        tags=["loyalty"],
    )
    def get(self, request: Request) -> Response:
        """Coupon campaigns, newest first, a page at a time."""
        campaigns = CouponCampaign.objects.annotate(issued_count=Count("coupons"))
        return paginated(request, self, campaigns, ordering="-id",
                         serialize=lambda page: CampaignOutput(page, many=True).data)  # fmt: skip

    @extend_schema(request=CampaignInput, responses={201: CampaignOutput}, tags=["loyalty"])
    def post(self, request: Request) -> Response:
        """Create a campaign (marketing). Issue its coupons with ``issue/``."""
        data = CampaignInput(data=request.data)
        data.is_valid(raise_exception=True)
        campaign = data.save()
        campaign.issued_count = 0
        return Response(CampaignOutput(campaign).data, status=status.HTTP_201_CREATED)


class CampaignIssueView(APIView):
    permission_classes = (permissions_required(ISSUE_COUPONS), Unscoped)

    @extend_schema(request=IssueInput, responses={200: IssueOutput}, tags=["loyalty"])
    def post(self, request: Request, campaign_id: int) -> Response:
        """Issue one coupon of the campaign to each member given, or to every member of a
        segment (an absorbed id counts as its survivor). Idempotent: a member who has one gets
        none again. A campaign to a segment skips members without consent to its purpose
        (``marketing``, every marketing purpose, unless one is named) and says how many; so
        does one to member ids that names a purpose. Audited."""
        campaign = CouponCampaign.objects.filter(pk=campaign_id).first()
        if campaign is None:
            raise ApiError(
                code="not_found", message="No such campaign.", status_code=status.HTTP_404_NOT_FOUND
            )
        data = IssueInput(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = data.validated_data
        purpose: str | None = None
        purposes = None
        if "segment" in wanted or "purpose" in wanted:
            purpose, purposes = declared_purpose(wanted.get("purpose") or ALL_MARKETING)
        outcome = coupons_issue_checked(
            campaign=campaign, member_ids=wanted.get("member_ids"), segment=wanted.get("segment", ""),
            purpose=purpose or "", purposes=purposes, user=request_staff(request),
        )  # fmt: skip
        return Response(
            IssueOutput({"issued": outcome.issued, "purpose": purpose, "withheld": outcome.withheld}).data
        )


class ExpiringView(APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS),)

    @extend_schema(
        parameters=[OpenApiParameter("within_days", OpenApiTypes.INT), cursor_parameter("after"),
                    OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: ExpiringPageOutput}, tags=["loyalty"],
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        """Members about to lose points: whose next points expire within ``within_days``
        (default 30), by member id (keyset: ``after`` = the last member id of the page)."""
        within = query_int(request, "within_days", default=30, low=0, high=3660)
        size = query_int(request, "page_size", default=100, low=1, high=1000)
        after = query_cursor(request, legacy="after", low=0)
        rows = members_expiring(
            within_days=within, after_member=after, size=size + 1, scope=request_scope(request)
        )
        page = rows[:size]
        return Response(
            ExpiringPageOutput({
                "results": [{"member_id": a.member_id, "points": a.next_expiry_points, "expires_at": a.next_expiry_at,
                             "balance": a.balance} for a in page],
                "next_cursor": page[-1].member_id if len(rows) > size and page else None,
            }).data
        )  # fmt: skip
