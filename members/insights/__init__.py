"""Omnichannel insights: KPI rollups, funnels, attribution with channel ROI, retention cohorts.

Reads what identity and members keep (resolved members, orders, the points ledger, consent) and
adds it up; it writes only its own tables. Counts and sums only: no personal data leaves here.
"""
