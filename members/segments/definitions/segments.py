"""Writes of segment definitions: create, change, delete and copy a segment. A dynamic
segment's rule is checked against the graph of what rules read and recomputed in full after
the commit; built-in segments are the platform's (copied, never changed)."""

from django.contrib.auth.models import User
from django.db import transaction

from members.locks import memberships_lock
from members.segments.definitions.graph import rule_check, unread_check
from members.segments.definitions.writes import (
    UNCHANGED,
    DefinitionRefused,
    built_in_refused,
    definition_audit,
    definition_created,
    definition_locked,
    definitions_lock,
    key_check,
    recompute_after_commit,
)
from members.segments.models import Segment, SegmentMember
from members.segments.services import segment_static_set


@transaction.atomic
def segment_create(
    *,
    key: str,
    name: str,
    kind: str,
    rule: object = None,
    description: str = "",
    by: User | None = None,
    channel: str = "cli",
) -> Segment:
    """A new segment: dynamic (its rule is recomputed in full after the commit) or static (an
    empty list, filled with ``segment_members_set`` or ``segment_members_upload``)."""
    definitions_lock()
    key_check(key, "segment")
    if kind not in Segment.Kind.values:
        raise DefinitionRefused("Unknown kind.", [("kind", f"one of {', '.join(Segment.Kind.values)}")])
    if kind == Segment.Kind.DYNAMIC:
        rule_check(("segment", key), rule)
    elif rule is not None:
        raise DefinitionRefused(
            "A static segment has no rule.", [("rule", "a static segment is a list; no rule")]
        )
    segment = definition_created(
        Segment, "segment", key=key, name=name, kind=kind, rule=rule, description=description
    )
    definition_audit("segment", key, f"created ({kind})", rule=rule, by=by, channel=channel)
    if kind == Segment.Kind.DYNAMIC:
        recompute_after_commit("segment", segment.pk)
    return segment


@transaction.atomic
def segment_update(
    *,
    segment: Segment,
    name: str | None = None,
    description: str | None = None,
    rule: object = UNCHANGED,
    by: User | None = None,
    channel: str = "cli",
) -> Segment:
    """Change a segment's name, description or (dynamic) rule; a changed rule is recomputed in
    full after the commit. Built-in segments are refused: copy them."""
    definitions_lock()
    segment = definition_locked(Segment, segment.pk, "segment", segment.key)
    if segment.built_in:
        raise built_in_refused(segment)
    fields = ["updated_at"]
    if name is not None:
        segment.name = name
        fields.append("name")
    if description is not None:
        segment.description = description
        fields.append("description")
    rule_changed = rule is not UNCHANGED and rule != segment.rule
    if rule is not UNCHANGED and segment.kind == Segment.Kind.STATIC and rule is not None:
        raise DefinitionRefused(
            "A static segment has no rule.", [("rule", "a static segment is a list; no rule")]
        )
    if rule_changed:
        rule_check(("segment", segment.key), rule)
        segment.rule = rule
        fields.append("rule")
    segment.save(update_fields=fields)
    changed = ", ".join(field for field in fields if field != "updated_at") or "nothing"
    definition_audit(
        "segment",
        segment.key,
        f"changed {changed}",
        rule=segment.rule if rule_changed else None,
        by=by,
        channel=channel,
    )
    if rule_changed:
        recompute_after_commit("segment", segment.pk)
    return segment


@transaction.atomic
def segment_delete(*, segment: Segment, by: User | None = None, channel: str = "cli") -> None:
    """Delete a segment with its members and history. Refused for a built-in segment, and for
    a segment that a tag's or another segment's rule reads (naming them)."""
    definitions_lock()
    segment = definition_locked(Segment, segment.pk, "segment", segment.key)
    if segment.built_in:
        raise built_in_refused(segment)
    unread_check(("segment", segment.key))
    # Waits for refreshes evaluating it to commit, so none writes to a segment that is gone.
    memberships_lock(tag_ids=[], segment_ids=[segment.pk], exclusive=True)
    definition_audit("segment", segment.key, "deleted", by=by, channel=channel)
    segment.delete()


@transaction.atomic
def segment_copy(
    *, segment: Segment, key: str, name: str | None = None, by: User | None = None, channel: str = "cli"
) -> Segment:
    """An editable copy of a segment (built-in or not) under a new key: the same rule,
    recomputed after the commit, or the same list."""
    definitions_lock()
    key_check(key, "segment")
    copy = definition_created(
        Segment, "segment", key=key, name=name or f"{segment.name[:193]} (copy)", kind=segment.kind,
        rule=segment.rule, description=segment.description, built_in=False,
    )  # fmt: skip
    definition_audit(
        "segment", key, f"created as a copy of {segment.key}", rule=copy.rule, by=by, channel=channel
    )
    if copy.kind == Segment.Kind.DYNAMIC:
        recompute_after_commit("segment", copy.pk)
    else:
        members = SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True)
        segment_static_set(segment=copy, member_ids=list(members))
    return copy
