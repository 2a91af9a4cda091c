"""Defining segments and tags, static lists, and manual tags on members (/api/v1/).

Marketing (and admins) create, edit, copy and delete segments and tags: ``segments.add_segment``,
``change_segment``, ``delete_segment`` and the same for ``tag``. CRM agents and managers see
tags and put manual tags on members (``segments.add_membertag``, ``delete_membertag``). A rule's
problems come back as 400s naming each one as ``rule.<path>``; built-in segments and computed
tags answer 409 (copy a built-in segment to change it); deleting what a rule reads answers 409
naming the readers. The views are thin: ``members.segments.definitions`` decides.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiRequest, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.db import MAX_BIGINT
from cdp.errors import ApiError, FieldError
from cdp.pagination import (
    CURSOR_HELP,
    cursor_parameter,
    page_json,
    page_serializer,
    paginated,
    query_cursor,
    query_int,
)
from cdp.parsers import BoundedJSONParser
from cdp.permissions import Unscoped, permissions_required, request_staff
from cdp.scopes import request_scope
from members.api import MemberTagOutput
from members.segments.api import VIEW_SEGMENTS, read, segment_by_key
from members.segments.api import members as members_api
from members.segments.definitions.manual_tags import member_tag_add, member_tag_remove
from members.segments.definitions.segments import segment_copy, segment_create, segment_delete, segment_update
from members.segments.definitions.static_lists import (
    StaticListOutcome,
    segment_members_set,
    segment_members_upload,
)
from members.segments.definitions.tags import tag_create, tag_delete, tag_update
from members.segments.definitions.writes import DefinitionRefused
from members.segments.models import Segment, Tag
from members.selectors import member_tag_history, member_tags, member_visible

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission  # the stubs' name only

ADD_SEGMENTS = "segments.add_segment"
CHANGE_SEGMENTS = "segments.change_segment"
DELETE_SEGMENTS = "segments.delete_segment"
VIEW_TAGS = "segments.view_tag"
ADD_TAGS = "segments.add_tag"
CHANGE_TAGS = "segments.change_tag"
DELETE_TAGS = "segments.delete_tag"
VIEW_MEMBERS = "members.view_member"
TAG_MEMBERS = "segments.add_membertag"
UNTAG_MEMBERS = "segments.delete_membertag"
UPLOAD_CHUNK = 64 * 1024

_MEMBER_ID = OpenApiParameter("member_id", OpenApiTypes.INT, OpenApiParameter.PATH,
                              description="A member id (one absorbed by a merge acts on its survivor).")  # fmt: skip


class _PermissionsByMethod(APIView):
    """A view whose writes need their own permissions (``required``: method → permissions);
    other methods keep the view's (or the read view's it extends)."""

    required: dict[str, tuple[str, ...]]

    def get_permissions(self) -> "Sequence[_SupportsHasPermission]":
        if self.request.method not in self.required:
            return super().get_permissions()
        # A view open to unscoped users only stays so for its writes.
        unscoped = [Unscoped()] if Unscoped in self.permission_classes else []
        return [permissions_required(*self.required[self.request.method])(), *unscoped]


def _refused(error: DefinitionRefused) -> ApiError:
    return ApiError(
        code={404: "not_found", 409: "conflict"}.get(error.status, "invalid"),
        message=error.message,
        errors=[FieldError(field, reason) for field, reason in error.errors],
        status_code=error.status,
    )


# --- shapes -----------------------------------------------------------------------------------

_RULE_HELP = "The condition (docs/rules.md); required for a dynamic segment or a rule tag, else null."


class SegmentInput(serializers.Serializer):
    key = serializers.SlugField(max_length=64, help_text="Letters, digits, - and _; never changes.")
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=Segment.Kind.values)
    rule = serializers.JSONField(required=False, allow_null=True, default=None, help_text=_RULE_HELP)


class SegmentChangeInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    rule = serializers.JSONField(required=False, allow_null=True, help_text="A new rule: recomputed in full.")
    key = serializers.CharField(required=False, help_text="Cannot change (rules and tools name it).")
    kind = serializers.CharField(required=False, help_text="Cannot change.")


class CopyInput(serializers.Serializer):
    key = serializers.SlugField(max_length=64, help_text="The copy's key.")
    name = serializers.CharField(max_length=200, required=False, help_text='Default: "<name> (copy)".')


class MemberIdsInput(serializers.Serializer):
    member_ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_BIGINT), max_length=100_000,
                                       help_text="The list's members (an id absorbed by a merge counts as its survivor).")  # fmt: skip


class UploadInput(serializers.Serializer):
    file = serializers.FileField(help_text="CSV: a header type,value or one column named by the type.")


class ListProblemOutput(serializers.Serializer):
    line = serializers.IntegerField(help_text="CSV line (the header is line 1), or position in member_ids.")
    value = serializers.CharField()
    reason = serializers.CharField()


class StaticListOutput(serializers.Serializer):
    segment = read.SegmentOutput()
    rows = serializers.IntegerField(help_text="Data rows (or ids) given.")
    matched = serializers.IntegerField(help_text="Rows that found a member.")
    unmatched = serializers.IntegerField(help_text="Valid rows that found nobody.")
    invalid = serializers.IntegerField(help_text="Rows whose type or value is not valid.")
    problems = ListProblemOutput(many=True, help_text="The first unmatched or invalid rows.")


class TagInput(serializers.Serializer):
    key = serializers.SlugField(max_length=64, help_text="Letters, digits, - and _; never changes.")
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=[Tag.Kind.MANUAL, Tag.Kind.RULE])
    rule = serializers.JSONField(required=False, allow_null=True, default=None, help_text=_RULE_HELP)


class TagChangeInput(SegmentChangeInput):
    pass


class TagOutput(serializers.ModelSerializer):
    class Meta:
        model = Tag
        fields = ("key", "name", "description", "kind", "rule", "created_at", "updated_at")


class MemberTagInput(serializers.Serializer):
    tag = serializers.SlugField(max_length=64, help_text="A manual tag's key.")


class ManualTagOutput(serializers.Serializer):
    member_id = serializers.IntegerField(help_text="The member it acted on (an absorbed id's survivor).")
    tag = serializers.CharField()
    changed = serializers.BooleanField(help_text="False: nothing to do (had it already / did not have it).")


class TagChangeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    tag = serializers.CharField()
    tag_name = serializers.CharField()
    action = serializers.ChoiceField(choices=["added", "removed"])
    by = serializers.CharField(allow_null=True, help_text="The staff user; null for rule and computed tags.")
    at = serializers.DateTimeField()
    member_id = serializers.IntegerField(help_text="An absorbed member's id for changes before its merge.")


class TagHistoryPage(serializers.Serializer):
    results = TagChangeOutput(many=True)
    next_cursor = serializers.IntegerField(allow_null=True, help_text=CURSOR_HELP)


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _unchangeable(data: dict, current: Segment | Tag) -> None:
    errors = [
        FieldError(name, f"a {type(current).__name__.lower()}'s {name} never changes; copy or create anew")
        for name in ("key", "kind")
        if name in data and data[name] != getattr(current, name)
    ]
    if errors:
        raise ApiError(code="invalid", message="The key and kind cannot change.", errors=errors)


def _changes(data: dict) -> dict:
    return {name: data[name] for name in ("name", "description", "rule") if name in data}


# --- segments ---------------------------------------------------------------------------------


class SegmentsView(_PermissionsByMethod, read.SegmentsView):
    required = {"POST": (VIEW_SEGMENTS, ADD_SEGMENTS)}
    parser_classes = (BoundedJSONParser,)

    @extend_schema(request=SegmentInput, responses={201: read.SegmentOutput}, tags=["segments"])
    def post(self, request: Request) -> Response:
        """Create a segment: dynamic (a rule, computed in full within seconds) or static (a
        list: then PUT its members). 400 names each problem of the rule as ``rule.<path>``."""
        data = _valid(SegmentInput, request.data)
        try:
            segment = segment_create(**data, by=request_staff(request), channel="api")
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(read.SegmentOutput(segment).data, status=status.HTTP_201_CREATED)


class SegmentView(_PermissionsByMethod, read.SegmentView):
    required = {"PATCH": (VIEW_SEGMENTS, CHANGE_SEGMENTS), "DELETE": (VIEW_SEGMENTS, DELETE_SEGMENTS)}
    parser_classes = (BoundedJSONParser,)

    @extend_schema(request=SegmentChangeInput, responses={200: read.SegmentOutput}, tags=["segments"])
    def patch(self, request: Request, key: str) -> Response:
        """Change a segment's name, description or rule (a new rule is recomputed in full
        within seconds). Built-in segments answer 409: copy them."""
        segment = segment_by_key(key)
        data = _valid(SegmentChangeInput, request.data)
        _unchangeable(data, segment)
        try:
            segment = segment_update(
                segment=segment, **_changes(data), by=request_staff(request), channel="api"
            )
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(read.SegmentOutput(segment).data)

    @extend_schema(responses={204: None}, tags=["segments"])
    def delete(self, request: Request, key: str) -> Response:
        """Delete a segment, its members and its history. 409 for a built-in segment, or one
        that a tag's or another segment's rule reads (they are named)."""
        try:
            segment_delete(segment=segment_by_key(key), by=request_staff(request), channel="api")
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(status=status.HTTP_204_NO_CONTENT)


class SegmentCopyView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS, ADD_SEGMENTS),)
    parser_classes = (BoundedJSONParser,)

    @extend_schema(request=CopyInput, responses={201: read.SegmentOutput}, tags=["segments"])
    def post(self, request: Request, key: str) -> Response:
        """Copy a segment (a built-in one, to change it) under a new key: the same rule,
        computed in full within seconds, or the same list."""
        segment = segment_by_key(key)
        data = _valid(CopyInput, request.data)
        try:
            copy = segment_copy(
                segment=segment,
                key=data["key"],
                name=data.get("name"),
                by=request_staff(request),
                channel="api",
            )
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(read.SegmentOutput(copy).data, status=status.HTTP_201_CREATED)


class CsvBody:
    """A ``text/csv`` request body, read in chunks as the upload is processed."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def chunks(self) -> Iterator[bytes]:
        return iter(lambda: self.stream.read(UPLOAD_CHUNK), b"")


class CsvParser(BaseParser):
    media_type = "text/csv"

    # request.data is then the body itself, read in chunks (not a mapping, as the stubs expect).
    def parse(  # type: ignore[override]
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> CsvBody:
        return CsvBody(stream)


class SegmentMembersView(_PermissionsByMethod, members_api.SegmentMembersView):
    required = {"PUT": (VIEW_SEGMENTS, CHANGE_SEGMENTS)}
    parser_classes = (BoundedJSONParser, MultiPartParser, CsvParser)

    @extend_schema(
        request={
            "application/json": MemberIdsInput,
            "multipart/form-data": UploadInput,
            "text/csv": OpenApiRequest(OpenApiTypes.STR),
        },
        responses={200: StaticListOutput},
        tags=["segments"],
    )
    def put(self, request: Request, key: str) -> Response:
        """Set a static segment's members: a JSON list of member ids, or a CSV (multipart
        ``file``, or a ``text/csv`` body) of any identifier type, either ``type,value`` rows
        or one column headed by the type (``phone``, ``email``, ``member_card``, ...,
        ``member_id``). Values are normalized as at ingestion. Answers how many rows matched,
        how many did not, and the first unmatched or invalid lines with the reason."""
        segment = segment_by_key(key)
        body = request.data
        try:
            if isinstance(body, CsvBody):
                outcome = segment_members_upload(segment=segment, chunks=body.chunks())
            elif request.content_type.startswith(CsvParser.media_type):  # an empty body
                outcome = segment_members_upload(segment=segment, chunks=[])
            elif "file" in request.FILES:
                upload: UploadedFile = request.FILES["file"]
                outcome = segment_members_upload(segment=segment, chunks=upload.chunks())
            elif isinstance(body, dict) and "member_ids" in body:
                ids = _valid(MemberIdsInput, body)["member_ids"]
                outcome = segment_members_set(segment=segment, member_ids=ids)
            else:
                raise ApiError(
                    code="invalid",
                    message="Give member_ids (JSON), a CSV file (multipart, field file) or a text/csv body.",
                    errors=[FieldError("member_ids", "give member ids, or upload a CSV as file")],
                )
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(StaticListOutput(_outcome_json(outcome)).data)


def _outcome_json(outcome: StaticListOutcome) -> dict:
    return {
        "segment": outcome.segment,
        "rows": outcome.rows,
        "matched": outcome.matched,
        "unmatched": outcome.unmatched,
        "invalid": outcome.invalid,
        "problems": [asdict(problem) for problem in outcome.problems],
    }


# --- tags -------------------------------------------------------------------------------------


def tag_by_key(key: str) -> Tag:
    """The tag of this key, or a 404 naming it."""
    tag = Tag.objects.filter(key=key).first()
    if tag is None:
        raise ApiError(code="not_found", message=f"No tag {key!r}.", status_code=status.HTTP_404_NOT_FOUND)
    return tag


class TagsView(_PermissionsByMethod, APIView):
    permission_classes = (permissions_required(VIEW_TAGS),)
    required = {"POST": (VIEW_TAGS, ADD_TAGS)}
    parser_classes = (BoundedJSONParser,)

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: page_serializer(TagOutput)},
        operation_id="api_v1_tags_list",
        tags=["tags"],
    )
    def get(self, request: Request) -> Response:
        """Every tag: manual (staff add and remove them), rule (members gain and lose them as
        they start and stop matching) and computed (RFM group, lifecycle stage, channel
        preference: the platform's, read-only)."""
        return paginated(request, self, Tag.objects.all(), ordering="key",
                         serialize=lambda page: TagOutput(page, many=True).data)  # fmt: skip

    @extend_schema(request=TagInput, responses={201: TagOutput}, tags=["tags"])
    def post(self, request: Request) -> Response:
        """Create a manual tag or a rule tag (computed in full within seconds). 400 names each
        problem of the rule as ``rule.<path>``."""
        data = _valid(TagInput, request.data)
        try:
            tag = tag_create(**data, by=request_staff(request), channel="api")
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(TagOutput(tag).data, status=status.HTTP_201_CREATED)


class TagView(_PermissionsByMethod, APIView):
    permission_classes = (permissions_required(VIEW_TAGS),)
    required = {"PATCH": (VIEW_TAGS, CHANGE_TAGS), "DELETE": (VIEW_TAGS, DELETE_TAGS)}
    parser_classes = (BoundedJSONParser,)

    @extend_schema(responses={200: TagOutput}, tags=["tags"])
    def get(self, request: Request, key: str) -> Response:
        """A tag's definition."""
        return Response(TagOutput(tag_by_key(key)).data)

    @extend_schema(request=TagChangeInput, responses={200: TagOutput}, tags=["tags"])
    def patch(self, request: Request, key: str) -> Response:
        """Change a tag's name, description or (rule tag) rule, recomputed in full within
        seconds. Computed tags answer 409."""
        tag = tag_by_key(key)
        data = _valid(TagChangeInput, request.data)
        _unchangeable(data, tag)
        try:
            tag = tag_update(tag=tag, **_changes(data), by=request_staff(request), channel="api")
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(TagOutput(tag).data)

    @extend_schema(responses={204: None}, tags=["tags"])
    def delete(self, request: Request, key: str) -> Response:
        """Delete a tag from every member, with its change log. 409 for a computed tag, or one
        that a rule reads (they are named)."""
        try:
            tag_delete(tag=tag_by_key(key), by=request_staff(request), channel="api")
        except DefinitionRefused as error:
            raise _refused(error) from error
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- manual tags on members -------------------------------------------------------------------


def _member_pk(member_id: int, request: Request) -> int:
    """The member of the path, if the user's scope sees it (``cdp.scopes``), else a 404."""
    member = member_visible(member_id=member_id, scope=request_scope(request))
    if member is None:
        raise ApiError(
            code="not_found", message=f"No member {member_id}.", status_code=status.HTTP_404_NOT_FOUND
        )
    return member.pk


def _manual_tag_response(outcome: Any, tag: Tag, *, created: bool) -> Response:
    return Response(
        ManualTagOutput({"member_id": outcome.member_id, "tag": tag.key, "changed": outcome.changed}).data,
        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )


class MemberTagsView(_PermissionsByMethod, APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS, VIEW_TAGS),)
    required = {"POST": (VIEW_MEMBERS, TAG_MEMBERS)}
    parser_classes = (BoundedJSONParser,)

    @extend_schema(
        parameters=[_MEMBER_ID],
        responses={200: page_serializer(MemberTagOutput)},
        operation_id="api_v1_members_tags_list",
        tags=["tags"],
    )
    def get(self, request: Request, member_id: int) -> Response:
        """The tags a member carries now, with who added the manual ones: all of them in one
        page (next_cursor is always null)."""
        held = member_tags(member_id=_member_pk(member_id, request))
        return Response(page_json(MemberTagOutput([t.__dict__ for t in held], many=True).data, None))

    @extend_schema(
        parameters=[_MEMBER_ID], request=MemberTagInput,
        responses={201: ManualTagOutput, 200: ManualTagOutput}, tags=["tags"],
    )  # fmt: skip
    def post(self, request: Request, member_id: int) -> Response:
        """Put a manual tag on a member (recorded with who and when): 201 when added, 200 when
        the member had it already (nothing recorded). Rule and computed tags answer 409."""
        pk = _member_pk(member_id, request)
        key = _valid(MemberTagInput, request.data)["tag"]
        tag = Tag.objects.filter(key=key).first()
        if tag is None:
            raise ApiError(
                code="invalid", message=f"No tag {key!r}.", errors=[FieldError("tag", "no such tag")]
            )
        try:
            outcome = member_tag_add(member_id=pk, tag=tag, by=request_staff(request))
        except DefinitionRefused as error:
            raise _refused(error) from error
        return _manual_tag_response(outcome, tag, created=outcome.changed)


class MemberTagView(APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS, UNTAG_MEMBERS),)

    @extend_schema(
        parameters=[_MEMBER_ID, OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: ManualTagOutput}, tags=["tags"],
    )  # fmt: skip
    def delete(self, request: Request, member_id: int, key: str) -> Response:
        """Take a manual tag off a member (recorded with who and when); ``changed`` is false
        when the member did not have it (nothing recorded). Rule and computed tags answer 409."""
        pk = _member_pk(member_id, request)
        tag = tag_by_key(key)
        try:
            outcome = member_tag_remove(member_id=pk, tag=tag, by=request_staff(request))
        except DefinitionRefused as error:
            raise _refused(error) from error
        return _manual_tag_response(outcome, tag, created=False)


class MemberTagHistoryView(APIView):
    permission_classes = (permissions_required(VIEW_MEMBERS, VIEW_TAGS),)

    @extend_schema(
        parameters=[_MEMBER_ID, cursor_parameter("before"),
                    OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: TagHistoryPage}, tags=["tags"],
    )  # fmt: skip
    def get(self, request: Request, member_id: int) -> Response:
        """Every tag added to or removed from the member (and the members a merge folded into
        it), by whom (staff, for manual tags) and when, newest first."""
        pk = _member_pk(member_id, request)
        size = query_int(request, "page_size", default=100, low=1, high=1000)
        before = query_cursor(request, legacy="before")
        rows = member_tag_history(member_id=pk, before=before, size=size + 1)
        page = rows[:size]
        return Response(
            TagHistoryPage({
                "results": [row.__dict__ for row in page],
                "next_cursor": page[-1].id if len(rows) > size else None,
            }).data
        )  # fmt: skip
