"""What staff read: timeline rows in words (never ``None``), identifier types labelled for
people, and the spend chart's months, axis and text alternative (pure functions)."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from members.presentation import identifier_label, timeline_details
from members.spend_chart import amount_label, months_ending, nice_step, spend_chart

CHANNELS = (("pos", "Store"), ("app", "App"), ("mini_program", "Mini-program"), ("web", "Web shop"))


def entry(properties: object = None, traits: object = None) -> dict:
    return {"properties": properties or {}, "traits": traits or {}}


def test_a_coupon_redeemed_without_an_amount_reads_without_none():
    details = timeline_details(entry({"order_id": "M8937870676", "coupon_id": "SPRING20",
                                      "coupon_name": "Spring 20 off", "discount": 20}))  # fmt: skip

    assert details == ["order M8937870676", "coupon SPRING20 (Spring 20 off): -20.00"]


def test_a_refund_says_so():
    refund = {**entry({"order_id": "S-1", "total": 100, "currency": "CNY"}), "event": "Order Refunded"}

    assert timeline_details(refund) == ["refund of order S-1: 100.00 CNY"]


def test_an_order_reads_with_its_amount_and_items():
    details = timeline_details(
        entry({"order_id": "S-1", "total": "300", "revenue": 280, "currency": "CNY",
               "products": [{"name": "Serum", "quantity": 2}, {"name": "Cream"}]})
    )  # fmt: skip

    assert details == ["order S-1: 300.00 CNY", "3 items"]


def test_a_product_viewed_names_the_product_and_an_identify_its_traits():
    assert timeline_details(entry({"name": "Hydrating Serum", "price": 368, "currency": "CNY"})) == [
        "Hydrating Serum: 368.00 CNY"
    ]
    assert timeline_details(entry(traits={"name": "Zhang Wei", "city": None, "email": ""})) == [
        "name=Zhang Wei"
    ]


# Text never containing "None" itself: any "None" in a phrase would then be ours.
texts = st.text(max_size=8).filter(lambda t: "None" not in t)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["order_id", "total", "revenue", "value", "currency", "coupon", "coupon_id",
                        "coupon_name", "discount", "name", "sku", "price", "products", "category", "x"])  # fmt: skip


@given(st.dictionaries(keys, json_values, max_size=8), st.dictionaries(texts, json_values, max_size=4))
def test_no_event_reads_none_or_breaks(properties, traits):
    for phrase in timeline_details(entry(properties, traits)):
        assert "None" not in phrase
        assert phrase.strip()


@pytest.mark.parametrize(
    ("type_", "label"),
    [("wechat_unionid", "WeChat unionid"), ("wechat_openid", "WeChat openid"), ("member_card", "Member card"),
     ("phone", "Phone"), ("user_id", "User id"), ("loyalty_no", "Loyalty no")],
)  # fmt: skip
def test_identifier_types_are_labelled_for_people(type_, label):
    assert identifier_label(type_) == label


def test_the_chart_has_every_month_of_the_range_zero_months_included():
    chart = spend_chart(
        {"2026-09": {"pos": Decimal("300"), "app": Decimal("120")}, "2026-10": {"pos": Decimal("-100")},
         "2024-01": {"web": Decimal("999")}},  # before the range: not drawn
        last_month="2027-02", count=12, channels=CHANNELS, currency="CNY",
    )  # fmt: skip

    assert [bar.month for bar in chart.bars] == months_ending("2027-02", 12)
    assert chart.bars[0].month == "2026-03"
    assert [bar.year_label for bar in chart.bars if bar.year_label] == ["2026", "2027"]
    september = chart.bars[6]
    assert (september.total, september.total_label) == (Decimal("420"), "420")
    assert [(s.channel, s.spend) for s in september.segments] == [
        ("pos", Decimal("300")),
        ("app", Decimal("120")),
    ]
    assert chart.bars[7].total == Decimal("-100")
    assert chart.bars[7].segments == ()
    assert [bar.total for bar in chart.bars].count(Decimal("0.00")) == 10
    assert [t.label for t in chart.ticks] == ["0", "200", "400", "600"]
    assert chart.ticks[-1].y == chart.plot_top  # the axis ends on a gridline over the tallest bar
    assert september.segments[-1].y >= chart.plot_top
    assert chart.summary == (
        "Net spend from 2026-03 to 2027-02: 320.00 CNY in all; the highest month 2026-09 with 420.00 CNY."
    )


def test_a_chart_of_no_purchases_still_has_its_months_and_an_axis():
    chart = spend_chart({}, last_month="2026-12", count=12, channels=CHANNELS, currency="CNY")

    assert len(chart.bars) == 12
    assert all(not bar.segments for bar in chart.bars)
    assert chart.ticks[0].label == "0"
    assert chart.summary.endswith("no purchases in these months.")


@pytest.mark.parametrize(
    ("top", "step"), [(Decimal(420), Decimal(200)), (Decimal(1), Decimal("0.25")), (Decimal(9800), Decimal(2500)),
                      (Decimal(0), Decimal(1))],
)  # fmt: skip
def test_gridlines_are_round(top, step):
    assert nice_step(top) == step


def test_amounts_are_short_on_the_chart():
    assert [amount_label(Decimal(v)) for v in ("0", "950", "1234.5", "35000", "1500000", "-100")] == [
        "0", "950", "1.2k", "35k", "1.5M", "-100",
    ]  # fmt: skip
