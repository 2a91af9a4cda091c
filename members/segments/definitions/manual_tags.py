"""Manual tags on members: staff put a manual tag on a member or take it off. It acts on the
member an id resolves to (the survivor of a merge), is recorded in ``TagChange`` with the
staff user, and is idempotent: adding a tag the member has, or removing one they lack,
records nothing."""

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction

from members.locks import member_refresh_locks
from members.marks import members_mark_dirty, members_refresh_enqueue
from members.models import Member
from members.segments.definitions.writes import DefinitionRefused
from members.segments.models import MemberTag, Tag, TagChange
from members.selectors import member_resolve


@dataclass(frozen=True, slots=True)
class ManualTagOutcome:
    member_id: int  # the member it acted on (the survivor, for an id absorbed by a merge)
    changed: bool  # False: the member already had it (add) or did not have it (remove)


@transaction.atomic
def member_tag_add(*, member_id: int, tag: Tag, by: User) -> ManualTagOutcome:
    """Put a manual tag on a member, recorded with who did it. Idempotent: a member who has
    it already keeps it, and nothing is recorded."""
    member = _member_locked(member_id)
    _manual_check(tag)
    _, created = MemberTag.objects.get_or_create(member=member, tag=tag, defaults={"added_by": by})
    if created:
        TagChange.objects.create(member=member, tag=tag, action=TagChange.Action.ADDED, by=by)
        _refresh_after_commit(member.pk)
    return ManualTagOutcome(member.pk, created)


@transaction.atomic
def member_tag_remove(*, member_id: int, tag: Tag, by: User) -> ManualTagOutcome:
    """Take a manual tag off a member, recorded with who did it. Idempotent: removing a tag
    the member does not have records nothing."""
    member = _member_locked(member_id)
    _manual_check(tag)
    removed, _ = MemberTag.objects.filter(member=member, tag=tag).delete()
    if removed:
        TagChange.objects.create(member=member, tag=tag, action=TagChange.Action.REMOVED, by=by)
        _refresh_after_commit(member.pk)
    return ManualTagOutcome(member.pk, bool(removed))


def _member_locked(member_id: int) -> Member:
    """The active member behind an id, under the member lock the refresh takes too (it moves
    manual tags to the survivor of a merge), re-read once locked in case a merge retired it
    meanwhile."""
    member = member_resolve(member_id=member_id)
    if member is None:
        raise DefinitionRefused(f"No member {member_id}.", status=404)
    member_refresh_locks({member.pk})
    current = member_resolve(member_id=member.pk)
    if current is not None and current.pk != member.pk:
        member_refresh_locks({current.pk})
        member = current
    return member


def _manual_check(tag: Tag) -> None:
    if tag.kind != Tag.Kind.MANUAL:
        raise DefinitionRefused(
            f"Tag {tag.key!r} is a {tag.kind} tag: members gain and lose it by its rule, not by hand.",
            [("tag", "only manual tags are added and removed by staff")],
            status=409,
        )


def _refresh_after_commit(member_id: int) -> None:
    """Mark the member for a refresh: rule tags and segments may read the manual tag."""
    members_mark_dirty(member_ids=[member_id])
    transaction.on_commit(members_refresh_enqueue)
