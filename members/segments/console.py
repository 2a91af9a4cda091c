"""The staff console's segment and tag pages, and the manual tag forms of the member page.

Server-rendered like ``members.console``, over the same services as the API
(``members.segments.definitions``) and with the same permissions: marketing defines segments
and tags; CRM staff put manual tags on members. A rule is edited as JSON, and the parser's
errors are shown by their path in it.
"""

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.db.models import Case, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from cdp.forms import JSONTextField
from cdp.permissions import request_staff
from cdp.scopes import request_scope
from members.segments.definitions.manual_tags import member_tag_add, member_tag_remove
from members.segments.definitions.segments import segment_copy, segment_create, segment_delete, segment_update
from members.segments.definitions.static_lists import StaticListOutcome, segment_members_upload
from members.segments.definitions.tags import tag_create, tag_delete, tag_update
from members.segments.definitions.writes import DefinitionRefused
from members.segments.models import Segment, SegmentChange, Tag
from members.segments.selectors import segment_members
from members.selectors import member_visible, members_in_scope

VIEW_SEGMENTS = "segments.view_segment"
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
#: How many recent entries and exits, and how many members, a segment's page shows.
SHOWN = 20


class DefinitionForm(forms.Form):
    key = forms.SlugField(
        max_length=64, help_text="Letters, digits, - and _. Rules and tools name it; it never changes."
    )
    name = forms.CharField(max_length=200)
    description = forms.CharField(max_length=500, required=False)
    rule = JSONTextField(required=False, help_text="The condition as JSON (docs/rules.md).")

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rule_errors: list[tuple[str, str]] = []
        if editing:
            for name in ("key", "kind"):
                if name in self.fields:
                    self.fields[name].disabled = True

    def refused(self, error: DefinitionRefused) -> None:
        """Show a service's refusal: the rule's problems by path, the rest on their fields."""
        if not error.errors:
            self.add_error(None, error.message)
        for field, reason in error.errors:
            if field == "rule" or field.startswith("rule."):
                self.rule_errors.append(
                    (field.removeprefix("rule").removeprefix(".") or "(the rule)", reason)
                )
            else:
                self.add_error(
                    field if field in self.fields and not self.fields[field].disabled else None, reason
                )
        if self.rule_errors:
            self.add_error(None, error.message)


class SegmentForm(DefinitionForm):
    kind = forms.ChoiceField(
        choices=Segment.Kind.choices, help_text="Dynamic: members matching the rule. Static: a list."
    )
    field_order = ("key", "name", "description", "kind", "rule")


class TagForm(DefinitionForm):
    kind = forms.ChoiceField(choices=[(Tag.Kind.MANUAL, "manual"), (Tag.Kind.RULE, "rule")],
                             help_text="Manual: staff add and remove it. Rule: members gain and lose it by the rule.")  # fmt: skip
    field_order = ("key", "name", "description", "kind", "rule")


class CopyForm(forms.Form):
    key = forms.SlugField(max_length=64, label="New key")
    name = forms.CharField(max_length=200, required=False, label="New name")


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV, UTF-8: a header type,value, or one column named by the type (phone, …)."
    )


def _needs(request: HttpRequest, *permissions: str) -> None:
    if not request.user.has_perms(permissions):
        raise PermissionDenied


def _segment(key: str) -> Segment:
    segment = Segment.objects.filter(key=key).first()
    if segment is None:
        raise Http404(f"No segment {key!r}.")
    return segment


def _tag(key: str) -> Tag:
    tag = Tag.objects.filter(key=key).first()
    if tag is None:
        raise Http404(f"No tag {key!r}.")
    return tag


# --- segments ---------------------------------------------------------------------------------


def _member_in_scope(request: HttpRequest, member_id: int) -> None:
    """A 404 for a member the user's scope does not see (as for an unknown one)."""
    if member_visible(member_id=member_id, scope=request_scope(request)) is None:
        raise Http404(f"No member {member_id}.")


def _by(request: HttpRequest) -> dict[str, Any]:
    """Who writes a definition, for the audit log."""
    return {"by": request_staff(request), "channel": "console"}


@login_required
@permission_required(VIEW_SEGMENTS, raise_exception=True)
def segments(request: HttpRequest) -> HttpResponse:
    return render(
        request, "members/segments/segments.html", {"segments": Segment.objects.order_by("-built_in", "key")}
    )


@login_required
@permission_required((VIEW_SEGMENTS, ADD_SEGMENTS), raise_exception=True)
def segment_new(request: HttpRequest) -> HttpResponse:
    form = SegmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            segment = segment_create(**form.cleaned_data, **_by(request))
        except DefinitionRefused as error:
            form.refused(error)
        else:
            messages.success(
                request, f"Segment {segment.key} created; its members are computed within seconds."
            )
            return redirect("console:segment", key=segment.key)
    return render(request, "members/segments/segment_form.html", {"form": form, "segment": None})


@login_required
@permission_required(VIEW_SEGMENTS, raise_exception=True)
def segment(request: HttpRequest, key: str) -> HttpResponse:
    return _segment_page(request, _segment(key))


def _segment_page(
    request: HttpRequest,
    segment: Segment,
    *,
    copy_form: CopyForm | None = None,
    upload_form: UploadForm | None = None,
    outcome: StaticListOutcome | None = None,
    status: int = 200,
) -> HttpResponse:
    history = list(SegmentChange.objects.filter(segment=segment).order_by("-id")[:SHOWN])
    members = segment_members(segment=segment, after=0, size=SHOWN)
    scope = request_scope(request)
    if not scope.unrestricted:  # a scoped user sees the members seen within the scope only
        within = set(members_in_scope({m for m, _ in members} | {c.member_id for c in history}, scope))
        history = [c for c in history if c.member_id in within]
        members = [(m, at) for m, at in members if m in within]
    return render(
        request,
        "members/segments/segment.html",
        {
            "segment": segment,
            "rule": json.dumps(segment.rule, indent=2, ensure_ascii=False)
            if segment.rule is not None
            else "",
            "history": history,
            "members": members,
            "copy_form": copy_form or CopyForm(initial={"key": f"{segment.key}-copy"[:64]}),
            "upload_form": upload_form or UploadForm(),
            "outcome": outcome,
            "editable": not segment.built_in,
        },
        status=status,
    )


@login_required
@permission_required((VIEW_SEGMENTS, CHANGE_SEGMENTS), raise_exception=True)
def segment_edit(request: HttpRequest, key: str) -> HttpResponse:
    segment = _segment(key)
    if segment.built_in:
        messages.error(request, f"Segment {segment.key} is built in: copy it to change it.")
        return redirect("console:segment", key=segment.key)
    initial = {"key": segment.key, "name": segment.name, "description": segment.description,
               "kind": segment.kind, "rule": segment.rule}  # fmt: skip
    form = SegmentForm(request.POST or None, initial=initial, editing=True)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            segment_update(segment=segment, name=data["name"], description=data["description"], **_by(request),
                           **({"rule": data["rule"]} if segment.kind == Segment.Kind.DYNAMIC else {}))  # fmt: skip
        except DefinitionRefused as error:
            form.refused(error)
        else:
            messages.success(request, f"Segment {segment.key} saved.")
            return redirect("console:segment", key=segment.key)
    return render(request, "members/segments/segment_form.html", {"form": form, "segment": segment})


@require_POST
@login_required
@permission_required((VIEW_SEGMENTS, ADD_SEGMENTS), raise_exception=True)
def segment_copy_view(request: HttpRequest, key: str) -> HttpResponse:
    segment = _segment(key)
    form = CopyForm(request.POST)
    if form.is_valid():
        try:
            copy = segment_copy(
                segment=segment, key=form.cleaned_data["key"], name=form.cleaned_data["name"] or None,
                **_by(request),
            )  # fmt: skip
        except DefinitionRefused as error:
            for field, reason in error.errors or [("key", error.message)]:
                form.add_error(field if field in form.fields else None, reason)
        else:
            messages.success(request, f"Copied {segment.key} to {copy.key}: this copy is yours to change.")
            return redirect("console:segment", key=copy.key)
    return _segment_page(request, segment, copy_form=form, status=400)


@require_POST
@login_required
@permission_required((VIEW_SEGMENTS, DELETE_SEGMENTS), raise_exception=True)
def segment_delete_view(request: HttpRequest, key: str) -> HttpResponse:
    segment = _segment(key)
    try:
        segment_delete(segment=segment, **_by(request))
    except DefinitionRefused as error:
        messages.error(request, error.message)
        return redirect("console:segment", key=segment.key)
    messages.success(request, f"Segment {key} deleted.")
    return redirect("console:segments")


@require_POST
@login_required
@permission_required((VIEW_SEGMENTS, CHANGE_SEGMENTS), raise_exception=True)
def segment_upload(request: HttpRequest, key: str) -> HttpResponse:
    if not request_scope(request).unrestricted:  # a list may name members of any store
        raise PermissionDenied(
            "Your account is scoped to stores or channels: lists are set by unscoped staff."
        )
    segment = _segment(key)
    form = UploadForm(request.POST, request.FILES)
    outcome = None
    if form.is_valid():
        try:
            outcome = segment_members_upload(segment=segment, chunks=form.cleaned_data["file"].chunks())
        except DefinitionRefused as error:
            for _, reason in error.errors:
                form.add_error("file", reason)
            if not error.errors:
                form.add_error("file", error.message)
        else:
            segment = outcome.segment
    return _segment_page(request, segment, upload_form=form, outcome=outcome, status=200 if outcome else 400)


# --- tags ---------------------------------------------------------------------------------------


@login_required
@permission_required(VIEW_TAGS, raise_exception=True)
def tags(request: HttpRequest) -> HttpResponse:
    form = TagForm(request.POST or None)
    if request.method == "POST":
        _needs(request, ADD_TAGS)
        if form.is_valid():
            try:
                tag = tag_create(**form.cleaned_data, **_by(request))
            except DefinitionRefused as error:
                form.refused(error)
            else:
                messages.success(request, f"Tag {tag.key} created.")
                return redirect("console:tags")
    return render(
        request,
        "members/segments/tags.html",
        {"tags": _tags_staff_first(), "form": form},
        status=400 if form.errors else 200,
    )


def _tags_staff_first() -> list[Tag]:
    """The tags staff define (manual, rule) before the platform's computed ones, by key."""
    computed_last = Case(When(kind=Tag.Kind.COMPUTED, then=1), default=0)
    return list(Tag.objects.order_by(computed_last, "kind", "key"))


@login_required
@permission_required(VIEW_TAGS, raise_exception=True)
def tag(request: HttpRequest, key: str) -> HttpResponse:
    tag = _tag(key)
    initial = {
        "key": tag.key,
        "name": tag.name,
        "description": tag.description,
        "kind": tag.kind,
        "rule": tag.rule,
    }
    form = TagForm(request.POST or None, initial=initial, editing=True)
    if request.method == "POST":
        _needs(request, CHANGE_TAGS)
        if form.is_valid():
            data = form.cleaned_data
            try:
                tag_update(tag=tag, name=data["name"], description=data["description"], **_by(request),
                           **({"rule": data["rule"]} if tag.kind == Tag.Kind.RULE else {}))  # fmt: skip
            except DefinitionRefused as error:
                form.refused(error)
            else:
                messages.success(request, f"Tag {tag.key} saved.")
                return redirect("console:tag", key=tag.key)
    return render(
        request,
        "members/segments/tag.html",
        {"tag": tag, "form": form, "editable": tag.kind != Tag.Kind.COMPUTED},
        status=400 if form.errors else 200,
    )


@require_POST
@login_required
@permission_required((VIEW_TAGS, DELETE_TAGS), raise_exception=True)
def tag_delete_view(request: HttpRequest, key: str) -> HttpResponse:
    tag = _tag(key)
    try:
        tag_delete(tag=tag, **_by(request))
    except DefinitionRefused as error:
        messages.error(request, error.message)
        return redirect("console:tag", key=tag.key)
    messages.success(request, f"Tag {key} deleted.")
    return redirect("console:tags")


# --- manual tags on the member page ------------------------------------------------------------


@require_POST
@login_required
@permission_required((VIEW_MEMBERS, TAG_MEMBERS), raise_exception=True)
def member_tag_add_view(request: HttpRequest, member_id: int) -> HttpResponse:
    _member_in_scope(request, member_id)
    tag = Tag.objects.filter(key=request.POST.get("tag", "")).first()
    if tag is None:
        messages.error(request, "Choose a tag to add.")
        return redirect("console:member", member_id=member_id)
    try:
        outcome = member_tag_add(member_id=member_id, tag=tag, by=request_staff(request))
    except DefinitionRefused as error:
        if error.status == 404:
            raise Http404(error.message) from error
        messages.error(request, error.message)
        return redirect("console:member", member_id=member_id)
    messages.success(
        request, f"Tag {tag.name} added." if outcome.changed else f"The member has {tag.name} already."
    )
    return redirect("console:member", member_id=outcome.member_id)


@require_POST
@login_required
@permission_required((VIEW_MEMBERS, UNTAG_MEMBERS), raise_exception=True)
def member_tag_remove_view(request: HttpRequest, member_id: int, key: str) -> HttpResponse:
    _member_in_scope(request, member_id)
    tag = _tag(key)
    try:
        outcome = member_tag_remove(member_id=member_id, tag=tag, by=request_staff(request))
    except DefinitionRefused as error:
        if error.status == 404:
            raise Http404(error.message) from error
        messages.error(request, error.message)
        return redirect("console:member", member_id=member_id)
    messages.success(
        request, f"Tag {tag.name} removed." if outcome.changed else f"The member did not have {tag.name}."
    )
    return redirect(reverse("console:member", args=[outcome.member_id]))


#: Added to the console's URLs (namespace ``console``) by ``config.urls``.
urlpatterns = [
    path("segments/", segments, name="segments"),
    path("new-segment/", segment_new, name="segment-new"),
    path("segments/<slug:key>/", segment, name="segment"),
    path("segments/<slug:key>/edit/", segment_edit, name="segment-edit"),
    path("segments/<slug:key>/copy/", segment_copy_view, name="segment-copy"),
    path("segments/<slug:key>/delete/", segment_delete_view, name="segment-delete"),
    path("segments/<slug:key>/members/", segment_upload, name="segment-upload"),
    path("tags/", tags, name="tags"),
    path("tags/<slug:key>/", tag, name="tag"),
    path("tags/<slug:key>/delete/", tag_delete_view, name="tag-delete"),
    path("members/<int:member_id>/tags/", member_tag_add_view, name="member-tag-add"),
    path("members/<int:member_id>/tags/<slug:key>/remove/", member_tag_remove_view, name="member-tag-remove"),
]
