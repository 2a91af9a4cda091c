"""The staff console's sections and where each role lands: one list that the navigation, the
landing redirect and the "not for your role" page all read, so a role never sees a link to a
page that would answer 403."""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.http import HttpRequest
from django.urls import reverse


@dataclass(frozen=True, slots=True)
class Page:
    """A page the navigation links to; ``also``: the view names of the pages under it (a saved
    funnel under Funnels), for which it is the current page too."""

    url_name: str
    label: str
    permission: str
    also: tuple[str, ...] = ()

    def shows(self, view_name: str) -> bool:
        return view_name == self.url_name or view_name in self.also


@dataclass(frozen=True, slots=True)
class Section:
    """An entry of the top navigation: one page, or several shown as tabs under it (the entry
    opens the first one its user may open). Kept few, so that the search box keeps its room."""

    label: str
    pages: tuple[Page, ...]


def _single(url_name: str, label: str, permission: str) -> Section:
    return Section(label, (Page(url_name, label, permission),))


#: The console's sections in the order the navigation shows them; a user lands on the first
#: one their role may open (an agent on the member search, marketing on the segments).
SECTIONS = (
    _single("console:search", "Members", "members.view_member"),
    _single("console:segments", "Segments", "segments.view_segment"),
    _single("console:tags", "Tags", "segments.view_tag"),
    Section(
        "Insights",
        (
            Page("console:insights", "KPIs", "insights.view_insights"),
            Page(
                "console:insights-funnels",
                "Funnels",
                "insights.view_funnel",
                also=(
                    "console:insights-funnel",
                    "console:insights-funnel-edit",
                    "console:insights-funnel-delete",
                    "console:insights-funnel-segment",
                ),
            ),
            Page(
                "console:insights-attribution",
                "Attribution",
                "insights.view_campaignspend",
                also=("console:insights-spend-new", "console:insights-spend-delete"),
            ),
            Page("console:insights-cohorts", "Cohorts", "insights.view_funnel"),
        ),
    ),
    _single("console:audit", "Audit log", "cdp.view_auditentry"),
    _single("console:alerts", "Alerts", "ops.view_alert"),
    _single("console:imports", "Imports", "imports.view_importjob"),
)


def sections_open_to(user: AbstractBaseUser | AnonymousUser | None) -> list[Section]:
    """The sections ``user`` may open, each with only the pages they may open (none for an
    anonymous or inactive user)."""
    # Only a PermissionsMixin user (a staff account) has permissions; an anonymous one has none.
    if not isinstance(user, PermissionsMixin) or not user.is_authenticated or not user.is_active:
        return []
    opened = (Section(s.label, tuple(p for p in s.pages if user.has_perm(p.permission))) for s in SECTIONS)
    return [section for section in opened if section.pages]


def landing_url(user: AbstractBaseUser | AnonymousUser | None) -> str | None:
    """Where ``user`` lands after logging in: the first section their role may open, or None
    when it may open none (a checkout till's account)."""
    sections = sections_open_to(user)
    return reverse(sections[0].pages[0].url_name) if sections else None


def navigation(request: HttpRequest) -> dict[str, object]:
    """Template context processor: the sections of the navigation as (url, label, current),
        the tabs of the current section when it has several pages (same form) and that section's
    label, and the home link."""
    user = getattr(request, "user", None)
    match = getattr(request, "resolver_match", None)
    view_name = match.view_name if match is not None else ""
    sections = sections_open_to(user)
    tabs: list[tuple[str, str, bool]] = []
    entries = []
    for section in sections:
        current = any(page.shows(view_name) for page in section.pages)
        entries.append((reverse(section.pages[0].url_name), section.label, current))
        if current and len(section.pages) > 1:
            tabs = [(reverse(p.url_name), p.label, p.shows(view_name)) for p in section.pages]
    return {
        "console_sections": entries,
        "console_tabs": tabs,
        "console_tabs_label": next((label for _, label, current in entries if current), ""),
        "console_home": reverse(sections[0].pages[0].url_name) if sections else reverse("console:login"),
    }
