"""The consent panel of the console's member page: the consent in force per purpose, the latest
statements, and a form to record what the person tells the desk (audited, as in the API)."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_POST

from cdp.permissions import request_staff
from cdp.scopes import request_scope
from events.selectors import source_names
from members.consent.models import ConsentStatement
from members.consent.selectors import PurposeConsent, consent_history, consent_in_force
from members.consent.services import ConsentRefused, consent_record
from members.consent.statements import STATES
from members.selectors import member_visible

VIEW_MEMBERS = "members.view_member"
VIEW_CONSENT = "consent.view_consentstatement"
RECORD_CONSENT = "consent.add_consentstatement"
#: Statements the panel lists (newest first); the API pages through all of them.
PANEL_HISTORY = 8


@dataclass(frozen=True, slots=True)
class Shown:
    """A statement as the panel shows it, with the name of the source its event came from."""

    purpose: str
    statement: ConsentStatement | None
    source: str


@dataclass(frozen=True, slots=True)
class ConsentPanel:
    purposes: list[Shown]  # each configured purpose, with the statement in force (None: never asked)
    history: list[Shown]
    more: bool  # the member holds more statements than the panel lists
    states: tuple[str, ...]
    choices: tuple[str, ...]  # the purposes staff may record


def consent_panel(request: HttpRequest, member_id: int) -> ConsentPanel | None:
    """The panel for the member page, or None for a role that may not see consent (two queries,
    and one for source names when the process's copy lacks one)."""
    if not request.user.has_perm(VIEW_CONSENT):
        return None
    history = list(consent_history(member_id=member_id)[: PANEL_HISTORY + 1])
    purposes: list[PurposeConsent] = consent_in_force(member_id=member_id, at=timezone.now())
    shown = [p.statement for p in purposes if p.statement] + history
    names = source_names(s.source_id for s in shown if s.source_id is not None)

    def source(statement: ConsentStatement | None) -> str:
        return names.get(statement.source_id, "") if statement and statement.source_id else ""

    return ConsentPanel(
        purposes=[Shown(p.purpose, p.statement, source(p.statement)) for p in purposes],
        history=[Shown(s.purpose, s, source(s)) for s in history[:PANEL_HISTORY]],
        more=len(history) > PANEL_HISTORY,
        states=STATES,
        choices=tuple(settings.CONSENT_PURPOSES),
    )


@require_POST
@login_required
@permission_required((VIEW_MEMBERS, RECORD_CONSENT), raise_exception=True)
def member_consent_record(request: HttpRequest, member_id: int) -> HttpResponse:
    if member_visible(member_id=member_id, scope=request_scope(request)) is None:
        raise Http404(f"No member {member_id}.")  # unknown, or out of the user's scope
    try:
        statement = consent_record(
            member_id=member_id, purpose=request.POST.get("purpose", ""), state=request.POST.get("state", ""),
            version=request.POST.get("version", ""), note=request.POST.get("note", ""),
            user=request_staff(request), channel="console",
        )  # fmt: skip
    except ConsentRefused as refused:
        if refused.status == 404:
            raise Http404(refused.reason) from refused
        messages.error(request, f"Consent not recorded: {refused.field} must be {refused.reason}.")
        return redirect("console:member", member_id=member_id)
    messages.success(request, f"Recorded: {statement.purpose} {statement.state}.")
    return redirect("console:member", member_id=statement.member_id)


#: Added to the console's URLs (namespace ``console``) by ``config.urls``.
urlpatterns = [
    path("members/<int:member_id>/consent/", member_consent_record, name="member-consent"),
]
