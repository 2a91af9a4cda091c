"""The pure parts of funnels, attribution, spend and the demo campaign: shares, spend in a range,
CSV errors by line, a funnel's errors by path, and a demo stream that stores nothing twice."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from members.insights.attribution import MODELS, touch_shares
from members.insights.demo_funnels import campaign_stream
from members.insights.funnels import FunnelInvalid, funnel_parse
from members.insights.spend import SpendInvalid, SpendLine, roi_table, spend_csv_parse, spend_in_range


@given(
    ages=st.lists(st.floats(0, 90 * 86400), min_size=1, max_size=30), half_life=st.floats(3600, 90 * 86400)
)
def test_every_model_shares_out_exactly_one(ages, half_life):
    ages = sorted(ages, reverse=True)  # touches in time order: the oldest first
    for model in MODELS:
        shares = touch_shares(model, ages, half_life)
        assert abs(sum(shares) - 1) < 1e-9, model
        assert all(share >= 0 for share in shares)


def test_position_based_is_40_20_40():
    assert touch_shares("position", [30, 20, 10, 0], 10) == [0.4, 0.1, 0.1, 0.4]
    assert touch_shares("position", [5, 0], 10) == [0.5, 0.5]
    decay = touch_shares("time_decay", [20, 10], 10)  # one half-life apart: twice the weight
    assert decay[1] == pytest.approx(2 * decay[0])


def test_spend_is_prorated_by_day():
    line = SpendLine("app", "sale", date(2026, 10, 1), date(2026, 10, 31), Decimal("3100"), "CNY")
    assert spend_in_range(line, date(2026, 10, 1), date(2026, 10, 10)) == Decimal("1000")
    assert spend_in_range(line, date(2026, 9, 1), date(2026, 12, 31)) == Decimal("3100")
    assert spend_in_range(line, date(2026, 11, 1), date(2026, 11, 30)) == 0


def test_roi_without_spend_is_none_and_with_spend_a_ratio():
    rows = roi_table(
        {"sale": {m: Decimal("300") for m in MODELS}}, [("sale", Decimal("100")), ("idle", Decimal(50))]
    )
    by = {r.group: r for r in rows}
    assert by["sale"].roas["linear"] == Decimal("3.00")
    assert by["sale"].roi["linear"] == Decimal("2.00")
    assert by["idle"].roi["first"] == Decimal("-1.00")
    none = roi_table({"x": {m: Decimal(1) for m in MODELS}}, [])
    assert none[0].roas["last"] is None


def test_a_spend_csv_names_every_bad_line():
    with pytest.raises(SpendInvalid) as refused:
        spend_csv_parse("channel,amount\napp,5\n", default_currency="CNY")
    assert "missing column period_start" in refused.value.errors[0][1]
    text = "channel,period_start,period_end,amount\napp,2026-10-01,2026-10-31,12.345\nweb,2026-10-01,2026-10-31,7\n"
    with pytest.raises(SpendInvalid) as refused:
        spend_csv_parse(text, default_currency="CNY")
    assert refused.value.errors == [
        ("line 2.amount", "expected an amount of 0 or more with at most 2 decimals")
    ]
    lines = spend_csv_parse(text.replace("12.345", "12.34"), default_currency="cny")
    assert [(x.channel, x.amount, x.currency) for x in lines] == [
        ("app", Decimal("12.34"), "CNY"),
        ("web", 7, "CNY"),
    ]


def test_a_funnel_is_checked_by_the_rule_parser():
    with pytest.raises(FunnelInvalid) as refused:
        funnel_parse(steps=[{"event": "A", "where": {"properties.size": [1]}}, {"event": "B", "when": 1}],
                     window_hours=24, breakdown="segment")  # fmt: skip
    assert [path for path, _ in refused.value.errors] == [
        "steps[0].where.properties.size",
        "steps[1].when",
        "segments",
    ]
    spec = funnel_parse(
        steps=[{"event": "A"}, {"event": "B", "where": {"store_code": "S1"}}], window_hours=24
    )
    assert spec.steps[1].where == (("store_code", "S1"),)


def test_the_demo_campaign_is_the_same_stream_every_run_and_reaches_people_in_every_channel():
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    first = list(campaign_stream(members=200, seed=3, now=now))
    again = list(campaign_stream(members=200, seed=3, now=datetime(2026, 12, 5, 12, tzinfo=UTC)))
    assert [e.message["messageId"] for e in first] == [e.message["messageId"] for e in again]
    assert len({e.message["messageId"] for e in first}) == len(first)
    assert {e.source_slug for e in first} >= {"app", "web", "mini_program", "pos-S001"}
    kinds = {e.message.get("event") or e.message["type"] for e in first}
    assert kinds >= {
        "Push Opened",
        "Coupon Claimed",
        "Store Visited",
        "page",
        "Product Viewed",
        "Order Completed",
    }
    # Every event can be joined to its person: the phone the channels know them by.
    assert all(e.message["context"]["traits"]["phone"] for e in first)
    assert all(e.received_at <= now for e in first)
