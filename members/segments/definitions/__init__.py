"""Writes of tag and segment definitions, static lists and manual tags: what staff do through
the API and the console.

Rules are validated with ``rules.parse.rule_parse`` (every problem with its path), must name tags
and segments that exist, and may not lead back to themselves through the tags and segments
they read. Definition writes take one transaction-scoped lock, so two edits made at once
cannot build a cycle or delete what the other starts to read. A created or edited rule is
recomputed in full by Celery after the commit (``members.segments.tasks.segment_recompute`` /
``tag_recompute``). Built-in segments are the platform's: they are copied, never edited or
deleted; computed tags (RFM group, lifecycle stage, channel preference) are read-only.

A static list is set from member ids or from CSV rows of any identifier type, normalized as
at ingestion and looked up a batch at a time. Manual tags act on the member an id resolves
to (the survivor of a merge), are recorded in ``TagChange`` with the staff user, and are
idempotent: adding a tag the member has, or removing one they lack, records nothing.

The package, by job: ``segments`` and ``tags`` (their definitions), ``static_lists`` (a
static segment's members, set from ids or a CSV upload), ``manual_tags`` (staff putting a
manual tag on a member and taking it off), ``graph`` (what rules read: references that must
exist, no cycle, nothing deleted that is read) and ``writes`` (what every definition write
shares: the refusal, the lock, the row checks, the recompute after the commit).
"""
