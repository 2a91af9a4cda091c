"""Staff roles. Each role is a Django group of the same name holding the role's permissions
(synced after every ``migrate``), so the admin site and the API agree on who may do what."""

from django.apps import apps
from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.db import models


class Role(models.TextChoices):
    CRM_AGENT = "crm_agent", "CRM agent"
    CRM_MANAGER = "crm_manager", "CRM manager"
    MARKETING = "marketing", "Marketing"
    CHECKOUT = "checkout", "Checkout (POS tills, web checkout)"
    PRIVACY_OFFICER = "privacy_officer", "Privacy officer"
    ANALYST = "analyst", "Analyst (insights: KPIs, funnels, attribution, cohorts)"
    ADMIN = "admin", "Administrator"


#: Least privilege: an agent sees members (and their points) with phone and email masked and
#: puts manual tags on them; a manager sees them in full, may split a wrong merge and adjust
#: points; marketing reaches members only through segments, defines segments and tags,
#: subscribes webhooks to segments and runs coupon campaigns; checkout (a till or a web shop's
#: checkout) spends points and redeems coupons and sees nothing else; the privacy officer
#: answers people's requests: finds them (seeing their contact details, to check who asks),
#: exports everything held about them, erases them, lists the requests and reads the audit log
#: (and the alerts, to act on a possible leak);
#: an administrator holds every permission of the platform's apps. Agents and managers see a
#: member's consent and record what the person tells them (each statement recorded is audited).
#: The analyst reads the insights board and API (counts and sums, no member), as marketing does.
#: Any role may be narrowed to stores, regions and channels (``cdp.scopes``).
ROLE_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.CRM_AGENT: (
        "members.view_member",
        "consent.view_consentstatement",
        "consent.add_consentstatement",
        "segments.view_tag",
        "segments.add_membertag",
        "segments.delete_membertag",
    ),
    Role.CRM_MANAGER: (
        "members.view_member",
        "members.view_contact_details",
        "consent.view_consentstatement",
        "consent.add_consentstatement",
        "members.split_member",
        "loyalty.adjust_points",
        "segments.view_tag",
        "segments.add_membertag",
        "segments.delete_membertag",
        # Follows import jobs (members.imports.api says why); starting one is the administrator's.
        "imports.view_importjob",
    ),
    Role.MARKETING: (
        "loyalty.view_couponcampaign",
        "loyalty.add_couponcampaign",
        "loyalty.add_coupon",
        "segments.view_segment",
        "segments.add_segment",
        "segments.change_segment",
        "segments.delete_segment",
        "segments.view_tag",
        "segments.add_tag",
        "segments.change_tag",
        "segments.delete_tag",
        "segments.view_segmentwebhook",
        "segments.add_segmentwebhook",
        "segments.change_segmentwebhook",
        "segments.delete_segmentwebhook",
        "insights.view_insights",
        # Funnels, cohorts, attribution and channel ROI (members.insights): reads, and what
        # marketing defines (saved funnels, the spend it enters).
        "insights.view_funnel",
        "insights.add_funnel",
        "insights.change_funnel",
        "insights.delete_funnel",
        "insights.view_campaignspend",
        "insights.add_campaignspend",
        "insights.change_campaignspend",
        "insights.delete_campaignspend",
    ),
    Role.CHECKOUT: ("loyalty.redeem_points", "loyalty.redeem_coupon"),
    Role.PRIVACY_OFFICER: (
        "cdp.view_auditentry",
        "members.view_member",
        "members.view_contact_details",
        "privacy.view_privacyrequest",
        "privacy.erase_member",
        "privacy.export_member",
        "privacy.view_retentionrun",
        # A burst of views or exports by one staff user is a red alert (a possible leak): the
        # privacy officer sees the alerts and acknowledges or resolves them.
        "ops.view_alert",
        "ops.change_alert",
    ),
    # Counts and sums of every store, never a person: the board and the insights API only.
    Role.ANALYST: (
        "insights.view_insights",
        # Funnels are an analyst's own questions: saved, edited, deleted; spend is marketing's to
        # enter, the analyst reads it (ROI and ROAS).
        "insights.view_funnel",
        "insights.add_funnel",
        "insights.change_funnel",
        "insights.delete_funnel",
        "insights.view_campaignspend",
    ),
}
PLATFORM_APPS = (
    "cdp",
    "events",
    "identity",
    "members",
    "loyalty",
    "segments",
    "consent",
    "privacy",
    "insights",
    "ops",
    "imports",
)


def user_roles(user: User | AnonymousUser | None) -> frozenset[str]:
    """The roles a user holds; a superuser holds them all."""
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(Role.values)
    return frozenset(user.groups.filter(name__in=Role.values).values_list("name", flat=True))


def roles_sync(**kwargs: object) -> None:
    """Give each role's group exactly its permissions (a ``post_migrate`` receiver)."""
    if not apps.is_installed("django.contrib.auth"):
        return
    everything = Permission.objects.filter(content_type__app_label__in=PLATFORM_APPS)
    for role in Role:
        group, _ = Group.objects.get_or_create(name=role)
        if role == Role.ADMIN:
            group.permissions.set(everything)
            continue
        wanted = [name.split(".", 1) for name in ROLE_PERMISSIONS[role]]
        group.permissions.set(
            [p for p in everything.select_related("content_type")
             if [p.content_type.app_label, p.codename] in wanted]
        )  # fmt: skip
