"""Erasure: a person's request, carried out by every app on its own data, in one transaction.

This app orchestrates; it writes only its own tables. Each app that holds something about a
person erases it with a service of its own, in this order (all in one transaction, so an
erasure is done whole or not at all, and retried whole):

1. identity (``identity.erasure``), under the identity lock: who the person is (the member, the
   members merged into it, its events, its identifiers); the identifiers go, keyed fingerprints
   of them stay, merge and split records forget them, the member becomes ``erased``;
2. events (``events.erasure``): the person's events are stripped of personal data or deleted
   (their source's rule), other people's events that mentioned the person lose those values,
   refused events mentioning them are deleted;
3. members (``members.erasure``): traits and group memberships go; orders and figures stay;
4. loyalty (``members.loyalty.erasure``): the ledger and coupons stay, staff's reasons are cleaned;
5. segments (``members.segments.erasure``): out of every tag and segment (exits marked
   ``erased`` in the feed and the webhooks), the webhook log cleaned;
6. consent (``members.consent.services.forget``): the person's statements go;
7. the platform (``cdp.services``): audit entries' subjects and the admin's history cleaned;
8. the hooks in ``PRIVACY_ERASURE_HOOKS`` (apps of a deployment's own holding more about people).

The person's values are found in free text in every written form (``cdp.redaction``): the
identifiers' values, and the phones, emails and names of their traits. Locks are taken in the
platform's one order: the identity lock, then the members' refresh locks (by id), then what
each service locks itself (points accounts, memberships, segments by id).
"""

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from cdp.models import AuditEntry
from cdp.redaction import Redactor
from cdp.retries import database_error_is_transient, transient_retry
from cdp.services import admin_log_erase, audit_record, audit_subjects_erase
from cdp.tasks import enqueue_on_commit
from events.erasure import events_by_rule, events_delete, events_redact, events_strip, rejected_events_erase
from events.selectors import events_stated_names
from identity.erasure import identifier_forms, identity_erase, identity_events_forget, member_cluster
from members.consent.services import forget as consent_forget
from members.erasure import member_forget, member_personal_values
from members.imports.erasure import import_problems_redact
from members.locks import member_refresh_locks
from members.loyalty.erasure import loyalty_forget
from members.privacy.models import PrivacyRequest
from members.privacy.selectors import access_export
from members.segments.erasure import segments_forget, webhook_log_redact
from members.selectors import member_resolve
from members.services import members_recompute

logger = logging.getLogger(__name__)


class ErasureRefused(ValueError):
    """A request that cannot be taken: ``field`` says which input is at fault."""

    def __init__(self, field: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.status = field, status


def erasure_request(*, member_id: int, user: User | AnonymousUser, reference: str = "") -> PrivacyRequest:
    """Receive a person's erasure request: a job (``received``) carried out by a worker once
    this transaction commits (and by the sweep if that nudge is lost). An id absorbed by a
    merge stands for its survivor: the person. Audited (who asked, when, from which job)."""
    member = member_resolve(member_id=member_id)
    if member is None:
        raise ErasureRefused("member", f"No member {member_id} (unknown, or erased already).", status=404)
    with transaction.atomic():
        request = PrivacyRequest.objects.create(
            kind=PrivacyRequest.Kind.ERASURE,
            member_id=member.pk,
            requested_by=user if isinstance(user, User) else None,
            reference=reference.strip()[:200],
        )
        audit_record(
            user=user,
            action=AuditEntry.Action.ERASE_MEMBER,
            member_ids=[member.pk],
            channel="api",
            detail=f"erasure request {request.pk}",
        )
        erasure_enqueue(request.pk)
    return request


def erasure_enqueue(request_id: int) -> None:
    from members.privacy.tasks import erasure_run_task  # the task module imports this one

    enqueue_on_commit(erasure_run_task, request_id, fallback="the sweep of pending privacy requests")


def erasure_run(*, request_id: int) -> PrivacyRequest:
    """Carry out an erasure request, whole, in one transaction; idempotent (a request done is
    returned as it is). A transient database error (a deadlock, a lost connection) is retried
    with backoff and, if it persists, raised: the request stays received and the sweep tries
    again. Any other failure leaves nothing half-done (the transaction rolls back) and fails
    the request, with the error's kind only (its text may quote the data being erased); a
    member no longer active (erased meanwhile by another request) fails it with the reason."""
    try:
        return transient_retry(partial(_erasure_run, request_id))
    except Exception as exc:
        if database_error_is_transient(exc):
            raise
        logger.exception("Privacy request %s failed", request_id)
        with transaction.atomic():
            request = PrivacyRequest.objects.select_for_update().get(pk=request_id)
            if request.status == PrivacyRequest.Status.RECEIVED:
                request.status, request.done_at = PrivacyRequest.Status.FAILED, timezone.now()
                request.error = f"{type(exc).__name__}: the erasure was rolled back; see the worker's log."
                request.save(update_fields=["status", "error", "done_at"])
        return request


def _erasure_run(request_id: int) -> PrivacyRequest:
    with transaction.atomic():
        request = PrivacyRequest.objects.select_for_update().get(pk=request_id)
        if request.status != PrivacyRequest.Status.RECEIVED:
            return request
        block = request.kind != PrivacyRequest.Kind.RETENTION
        counts = member_erase(member_id=request.member_id, erasure_id=request.pk, block=block)
        request.done_at = timezone.now()
        if counts is None:
            request.status = PrivacyRequest.Status.FAILED
            request.error = (
                f"Member {request.member_id} is not an active member (erased already, or unknown)."
            )
        else:
            request.status = PrivacyRequest.Status.DONE
            request.counts = counts
        request.save(update_fields=["status", "counts", "error", "done_at"])
    logger.info(
        "Privacy request %s (%s of member %s): %s",
        request.pk,
        request.kind,
        request.member_id,
        request.status,
    )
    return request


def member_erase(*, member_id: int, erasure_id: int, block: bool) -> dict[str, int] | None:
    """Erase the person behind an active member, in the caller's transaction (see the module's
    docstring); returns what was done per data class, or None when the member is not active."""
    cluster = member_cluster(member_id=member_id)  # takes the identity lock
    if cluster is None:
        return None
    member_ids = set(cluster.member_ids)
    # The person's members and those whose events mentioned them (recomputed below), in one
    # call: the member locks are taken in one global order.
    member_refresh_locks(member_ids | set(cluster.others_member_ids))
    phones, texts = identifier_forms(cluster.identifiers)
    trait_phones, trait_texts = member_personal_values(member_ids=member_ids)
    names = events_stated_names(event_ids=cluster.event_ids, keys=settings.PRIVACY_NAME_TRAITS)
    redactor = Redactor(phones=[*phones, *trait_phones], texts=[*texts, *trait_texts, *names])
    counts: dict[str, int] = {}

    def add(found: dict[str, int], prefix: str = "") -> None:
        for key, value in found.items():
            counts[f"{prefix}{key}"] = counts.get(f"{prefix}{key}", 0) + value

    strip, delete = events_by_rule(event_ids=cluster.event_ids)
    add(identity_erase(cluster=cluster, erasure_id=erasure_id, redactor=redactor, block=block))
    identity_events_forget(event_ids=delete)
    counts["events_stripped"] = events_strip(event_ids=strip, redactor=redactor)
    counts["events_deleted"] = events_delete(event_ids=delete)
    counts["events_of_others_redacted"] = events_redact(event_ids=cluster.others_event_ids, redactor=redactor)
    if cluster.others_member_ids:  # their profiles were computed from what those events said
        members_recompute(set(cluster.others_member_ids))
    counts["members_of_others_recomputed"] = len(cluster.others_member_ids)
    counts["rejected_events_deleted"] = rejected_events_erase(redactor=redactor)
    add(member_forget(member_ids=member_ids, redactor=redactor))
    add(loyalty_forget(member_ids=member_ids, redactor=redactor))
    add(segments_forget(member_ids=member_ids, now=timezone.now()), prefix="left_")
    counts["consent_statements_deleted"] = consent_forget(sorted(member_ids))
    counts["webhook_deliveries_cleaned"] = webhook_log_redact(redactor=redactor)
    counts["import_problems_cleaned"] = import_problems_redact(redactor=redactor)
    counts["audit_entries_cleaned"] = audit_subjects_erase(redactor=redactor)
    counts["admin_log_entries_cleaned"] = admin_log_erase(redactor=redactor)
    for path in settings.PRIVACY_ERASURE_HOOKS:
        hook: Callable[[list[int]], object] = import_string(path)
        done = hook(sorted(member_ids))
        counts[f"hook:{path}"] = done if isinstance(done, int) and not isinstance(done, bool) else 0
    return counts


def access_request(*, member_id: int, user: User | AnonymousUser, channel: str) -> dict[str, Any] | None:
    """Answer an access request: everything held about the person (``access_export``), recorded
    as a request done (with how much each section held) and in the audit log (who, when, from
    the API or the console). None for no active member."""
    with transaction.atomic():
        export = access_export(member_id=member_id, user=user)
        if export is None:
            return None
        PrivacyRequest.objects.create(
            kind=PrivacyRequest.Kind.ACCESS,
            status=PrivacyRequest.Status.DONE,
            member_id=export["member_id"],
            requested_by=user if isinstance(user, User) else None,
            counts=_sizes(export),
            done_at=timezone.now(),
        )
        audit_record(
            user=user,
            action=AuditEntry.Action.EXPORT_MEMBER,
            member_ids=[export["member_id"]],
            channel=channel,
            detail="access export: everything held about the person",
        )
    return export


def _sizes(export: dict[str, Any]) -> dict[str, int]:
    sizes = {"events": len(export["events"]), "orders": len(export["orders"])}
    sizes["identifiers"] = sum(len(values) for values in export["profile"].get("identifiers", {}).values())
    sizes["traits"] = len(export["profile"].get("traits", {}))
    sizes["ledger_rows"] = len(export["points"]["ledger"])
    sizes["coupons"] = len(export["points"]["coupons"])
    sizes["tags"] = len(export["profile"].get("tags", []))
    sizes["segments"] = len(export["profile"].get("segments", []))
    return sizes


def erasures_pending() -> list[int]:
    """Requests received and not yet carried out (their nudge lost, a worker down), oldest first."""
    return list(
        PrivacyRequest.objects.filter(status=PrivacyRequest.Status.RECEIVED)
        .exclude(kind=PrivacyRequest.Kind.ACCESS)
        .order_by("id")
        .values_list("pk", flat=True)
    )
