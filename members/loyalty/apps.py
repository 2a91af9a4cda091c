from django.apps import AppConfig


class LoyaltyConfig(AppConfig):
    """The loyalty program: earning rules, tiers, the points ledger and its accounts, coupons.
    Its tables kept the ``members_`` names they had when loyalty lived in the members app."""

    name = "members.loyalty"
    label = "loyalty"
    verbose_name = "Loyalty"
