from django.apps import AppConfig


class ImportsConfig(AppConfig):
    """Onboarding a brand's history (members, orders, refunds, opening balances, tiers, coupons)
    from files: each row becomes what the live path would have stored, written through the
    owning apps' services (events, loyalty), so the same rules hold for it."""

    name = "members.imports"
    label = "imports"
    verbose_name = "Imports"
