"""Loyalty: the points ledger, earning rules, tiers and coupons (models in ``members.models``)."""
