"""The staff console's sections and where each role lands: one list that the navigation, the
landing redirect and the "not for your role" page all read, so a role never sees a link to a
page that would answer 403."""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.http import HttpRequest
from django.urls import reverse


@dataclass(frozen=True, slots=True)
class Section:
    url_name: str
    label: str
    permission: str


#: The console's sections in the order the navigation shows them; a user lands on the first
#: one their role may open (an agent on the member search, marketing on the segments).
SECTIONS = (
    Section("console:search", "Members", "members.view_member"),
    Section("console:segments", "Segments", "segments.view_segment"),
    Section("console:tags", "Tags", "segments.view_tag"),
    Section("console:insights", "Insights", "insights.view_insights"),
    Section("console:insights-funnels", "Funnels", "insights.view_funnel"),
    Section("console:insights-attribution", "Attribution", "insights.view_campaignspend"),
    Section("console:insights-cohorts", "Cohorts", "insights.view_funnel"),
    Section("console:audit", "Audit log", "cdp.view_auditentry"),
    Section("console:alerts", "Alerts", "ops.view_alert"),
    Section("console:imports", "Imports", "imports.view_importjob"),
)


def sections_open_to(user: AbstractBaseUser | AnonymousUser | None) -> list[Section]:
    """The sections ``user`` may open (none for an anonymous or inactive user)."""
    # Only a PermissionsMixin user (a staff account) has permissions; an anonymous one has none.
    if not isinstance(user, PermissionsMixin) or not user.is_authenticated or not user.is_active:
        return []
    return [section for section in SECTIONS if user.has_perm(section.permission)]


def landing_url(user: AbstractBaseUser | AnonymousUser | None) -> str | None:
    """Where ``user`` lands after logging in: the first section their role may open, or None
    when it may open none (a checkout till's account)."""
    sections = sections_open_to(user)
    return reverse(sections[0].url_name) if sections else None


def navigation(request: HttpRequest) -> dict[str, object]:
    """Template context processor: the sections of the navigation and the home link."""
    user = getattr(request, "user", None)
    sections = sections_open_to(user)
    return {
        "console_sections": [(reverse(s.url_name), s.label, s.url_name) for s in sections],
        "console_home": reverse(sections[0].url_name) if sections else reverse("console:login"),
    }
