"""Reads of the members app."""

from members.models import Member


def member_resolve(*, member_id: int) -> Member | None:
    """The active member behind an id, following a merge: an id absorbed by a merge leads to
    its survivor (``merged_into`` always names an active member), so ids that CRM staff or
    marketing tools stored keep working."""
    member = Member.objects.filter(pk=member_id).select_related("merged_into").first()
    if member is None:
        return None
    return member.merged_into if member.status == Member.Status.MERGED else member
