"""Writes of tag definitions: create, change and delete a manual or rule tag. A rule tag's
rule is checked against the graph of what rules read and recomputed in full after the
commit; computed tags (RFM group, lifecycle stage, channel preference) are read-only."""

from django.contrib.auth.models import User
from django.db import transaction

from members.locks import memberships_lock
from members.segments.definitions.graph import rule_check, unread_check
from members.segments.definitions.writes import (
    UNCHANGED,
    DefinitionRefused,
    computed_refused,
    definition_audit,
    definition_created,
    definition_locked,
    definitions_lock,
    key_check,
    recompute_after_commit,
)
from members.segments.models import Tag


@transaction.atomic
def tag_create(
    *,
    key: str,
    name: str,
    kind: str,
    rule: object = None,
    description: str = "",
    by: User | None = None,
    channel: str = "cli",
) -> Tag:
    """A new manual tag (staff add and remove it) or rule tag (recomputed in full after the
    commit). Computed tags are the platform's."""
    definitions_lock()
    key_check(key, "tag")
    if kind == Tag.Kind.RULE:
        rule_check(("tag", key), rule)
    elif kind == Tag.Kind.MANUAL:
        if rule is not None:
            raise DefinitionRefused(
                "A manual tag has no rule.", [("rule", "staff add and remove a manual tag; no rule")]
            )
    else:
        raise DefinitionRefused(
            "Unknown kind.", [("kind", "manual or rule (computed tags belong to the platform)")]
        )
    tag = definition_created(Tag, "tag", key=key, name=name, kind=kind, rule=rule, description=description)
    definition_audit("tag", key, f"created ({kind})", rule=rule, by=by, channel=channel)
    if kind == Tag.Kind.RULE:
        recompute_after_commit("tag", tag.pk)
    return tag


@transaction.atomic
def tag_update(
    *,
    tag: Tag,
    name: str | None = None,
    description: str | None = None,
    rule: object = UNCHANGED,
    by: User | None = None,
    channel: str = "cli",
) -> Tag:
    """Change a tag's name, description or (rule tag) rule; a changed rule is recomputed in
    full after the commit. Computed tags are refused."""
    definitions_lock()
    tag = definition_locked(Tag, tag.pk, "tag", tag.key)
    if tag.kind == Tag.Kind.COMPUTED:
        raise computed_refused(tag)
    fields = ["updated_at"]
    if name is not None:
        tag.name = name
        fields.append("name")
    if description is not None:
        tag.description = description
        fields.append("description")
    if rule is not UNCHANGED and tag.kind == Tag.Kind.MANUAL and rule is not None:
        raise DefinitionRefused(
            "A manual tag has no rule.", [("rule", "staff add and remove a manual tag; no rule")]
        )
    rule_changed = rule is not UNCHANGED and rule != tag.rule
    if rule_changed:
        rule_check(("tag", tag.key), rule)
        tag.rule = rule
        fields.append("rule")
    tag.save(update_fields=fields)
    changed = ", ".join(field for field in fields if field != "updated_at") or "nothing"
    definition_audit(
        "tag", tag.key, f"changed {changed}", rule=tag.rule if rule_changed else None, by=by, channel=channel
    )
    if rule_changed:
        recompute_after_commit("tag", tag.pk)
    return tag


@transaction.atomic
def tag_delete(*, tag: Tag, by: User | None = None, channel: str = "cli") -> None:
    """Delete a manual or rule tag from every member, with its change log. Refused for a
    computed tag and for a tag that a rule reads (naming them)."""
    definitions_lock()
    tag = definition_locked(Tag, tag.pk, "tag", tag.key)
    if tag.kind == Tag.Kind.COMPUTED:
        raise computed_refused(tag)
    unread_check(("tag", tag.key))
    memberships_lock(tag_ids=[tag.pk], segment_ids=[], exclusive=True)
    definition_audit("tag", tag.key, "deleted", by=by, channel=channel)
    tag.delete()
