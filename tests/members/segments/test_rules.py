"""The rule language in Python: what rule_parse refuses (every error, with its path), each
operator for one member, what a rule references and when time alone changes its answer."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from members.segments.demo import DEMO_SEGMENTS
from members.segments.rules.analysis import rule_references, rule_window_expiry
from members.segments.rules.interpret import (
    EventFact,
    MemberFacts,
    event_counts_add,
    event_times_add,
    rule_matches,
)
from members.segments.rules.parse import RuleInvalid, rule_parse
from members.segments.rules.syntax import (
    KINDS,
    MAX_DAYS,
    All,
    EventFilter,
    HasTag,
    Not,
    Trait,
    event_filter_key,
)
from members.segments.rules.values import value_time
from members.segments.selectors import event_reads
from tests.members.segments import test_rules_sql as generated

NOW = datetime(2026, 10, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def errors(rule: object) -> list[tuple[str, str]]:
    with pytest.raises(RuleInvalid) as caught:
        rule_parse(rule)
    return caught.value.errors


def matches(rule: object, **facts: Any) -> bool:
    return rule_matches(rule_parse(rule), MemberFacts(member_id=1, **facts), now=NOW)


# --- validation -------------------------------------------------------------------------------


def test_every_error_is_reported_with_its_path():
    found = errors({
        "all": [
            {"trait": "city", "op": "eq", "value": "Shanghai"},
            {"trait": "age", "op": "gtt", "value": 3},
            {"any": [{"tag": "vip"}, {"aggregate": "spend", "op": "before", "value": 1}]},
            {"not": {"event": "Order Completed", "where": {"channel": "tv"}, "at_least": -1}},
            {"tier": {"in": ["gold", 3]}},
        ]
    })  # fmt: skip
    assert found == [
        ("all[1].op", "unknown operator 'gtt'; one of eq, ne, in, contains, gt, gte, lt, lte, exists, "
                      "not_exists, within_days, older_than_days"),
        ("all[2].any[1].op", "unknown operator 'before' for spend; one of eq, ne, gt, gte, lt, lte"),
        ("all[3].not.where.channel", "unknown channel 'tv'; one of pos, app, mini_program, web"),
        ("all[3].not.at_least", "expected a whole number 0 or more, got -1"),
        ("all[4].tier.in[1]", "expected a tier key, got 3"),
    ]  # fmt: skip
    assert "all[1].op: unknown operator 'gtt'" in str(RuleInvalid(found))


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("vip", [("", "expected a condition (an object such as {\"trait\": ...}), got the text 'vip'")]),
        ({}, [("", "not a condition (an empty object); expected one of all, any, not, trait, has_identifier, "
                   "aggregate, event, did_not, first_time, stopped, points, tier, tag, segment, consent")]),
        ({"tag": "vip", "segment": "x"}, [("", "a condition has exactly one of all, any, not, trait, "
                                               "has_identifier, aggregate, event, did_not, first_time, stopped, "
                                               "points, tier, tag, segment, consent; got tag, segment")]),
        ({"all": []}, [("all", "expected a non-empty list of conditions, got an empty list")]),
        ({"any": {"tag": "x"}}, [("any", "expected a non-empty list of conditions, got an object")]),
        ({"trait": "city", "op": "eq"}, [("value", "is required")]),
        ({"trait": "city", "op": "exists", "value": 1}, [("value", "unknown key 'value'; expected trait, op")]),
        ({"trait": "", "op": "exists"}, [("trait", "expected a trait name, got ''")]),
        ({"trait": "city", "op": "in", "value": []}, [("value", "expected a non-empty list of values, got an empty list")]),
        ({"trait": "city", "op": "in", "value": ["a", None]}, [("value[1]", "expected a text, number or true/false value, got null")]),
        ({"trait": "city", "op": "eq", "value": [1]}, [("value", "expected a text, number or true/false value, got a list")]),
        ({"trait": "d", "op": "gt", "value": "2026-02-30"}, [("value", "expected an ISO date or date-time such as "
                                                             "2026-01-31 or 2026-01-31T08:00:00+08:00, got '2026-02-30'")]),
        ({"trait": "d", "op": "gt", "value": True}, [("value", "gt compares numbers or ISO dates, got true/false")]),
        ({"trait": "d", "op": "within_days", "value": 1.5}, [("value", "expected a whole number of days from 0 to 36500, got 1.5")]),
        ({"trait": "d", "op": "eq", "value": 1, "extra": 2}, [("extra", "unknown key 'extra'; expected trait, op, value")]),
        ({"has_identifier": "Phone"}, [("has_identifier", "expected an identifier type (anonymous_id, device_id, email, "
                                        "member_card, phone, user_id, wechat_openid, wechat_unionid, or a custom type "
                                        "in lower case), got 'Phone'")]),
        ({"aggregate": "spent", "op": "gt", "value": 1}, [("aggregate", "unknown aggregate 'spent'; one of orders, spend, "
                                                          "refunded, average_order_value, orders_pos, orders_app, "
                                                          "orders_mini_program, orders_web, spend_pos, spend_app, "
                                                          "spend_mini_program, spend_web, events, events_pos, "
                                                          "events_app, events_mini_program, events_web, "
                                                          "first_purchase_at, last_purchase_at, last_event_at, "
                                                          "stores_visited")]),
        ({"aggregate": "orders", "op": "gt", "value": "3"}, [("value", "expected a number, got the text '3'")]),
        ({"aggregate": "last_purchase_at", "op": "after", "value": "yesterday"},
         [("value", "expected an ISO date or date-time such as 2026-01-31 or 2026-01-31T08:00:00+08:00, got 'yesterday'")]),
        ({"aggregate": "stores_visited", "op": "count_gte", "value": True}, [("value", "expected a whole number 0 or more, got True")]),
        ({"event": "", "where": {"color": "red"}}, [("event", "expected an event name such as 'Order Completed', got ''"),
                                                    ("where.color", "unknown field 'color'; one of channel, store_code, "
                                                                    "properties.<name>")]),
        ({"event": "X", "in_last_days": 0}, [("in_last_days", "expected a whole number of days from 1 to 36500, got 0")]),
        ({"event": "X", "where": {"properties.size": [1]}}, [("where.properties.size", "expected a text, number or "
                                                                                      "true/false value, got a list")]),
        ({"did_not": "X"}, [("did_not", "expected an object with event, where (optional), got the text 'X'")]),
        ({"first_time": {"event": "X"}}, [("first_time.in_last_days", "is required")]),
        ({"stopped": {"event": "X", "in_last_days": 30}}, [("stopped.before_days", "is required")]),
        ({"stopped": {"event": "X", "in_last_days": 30, "before_days": 30, "at_least": 1}},
         [("stopped.at_least", "unknown key 'at_least'; expected event, where, in_last_days, before_days")]),
        ({"points": {"op": "gte", "value": 1.5}}, [("points.value", "expected a whole number of points, got 1.5")]),
        ({"points": 100}, [("points", 'expected {"op": ..., "value": ...}, got the number 100')]),
        ({"tier": ["gold"]}, [("tier", 'expected {"in": ["gold", ...]} or {"eq": "gold"}, got [\'gold\']')]),
        ({"tag": "VIP list"}, [("tag", "expected a tag key (letters, digits, - and _), got 'VIP list'")]),
        ({"segment": 7}, [("segment", "expected a segment key (letters, digits, - and _), got 7")]),
        ({"consent": "Marketing SMS"}, [("consent", "expected a consent purpose such as 'marketing_sms' (lower "
                                                    "case), got 'Marketing SMS'")]),
        ({"consent": ["marketing_sms"]}, [("consent", "expected a consent purpose such as 'marketing_sms' (lower "
                                                      "case), got ['marketing_sms']")]),
        ({"consent": "analytics", "granted": True}, [("granted", "unknown key 'granted'; expected consent")]),
    ],
)  # fmt: skip
def test_what_is_refused_and_why(rule, expected):
    assert errors(rule) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_condition_reaches_its_own_parser(kind):
    """Each kind the language names is dispatched to a parser, which refuses a bad body for
    what it is (never "not a condition")."""
    problems = errors({kind: True})

    assert problems
    assert not any(
        reason.startswith(("not a condition", "a condition has exactly one")) for _, reason in problems
    )


def test_a_valid_rule_parses_into_frozen_conditions():
    condition = rule_parse({"all": [{"not": {"tag": "staff"}}, {"trait": "age", "op": "gte", "value": 18}]})

    assert condition == All((Not(HasTag("staff")), Trait("age", "gte", Decimal(18))))
    with pytest.raises(AttributeError):
        condition.items = ()


# --- traits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "trait", "expected"),
    [
        ("eq", "Shanghai", "Shanghai", True),
        ("eq", "Shanghai", "shanghai", False),  # exact, case-sensitive
        ("eq", 5, "5", True),  # a number and a numeric text
        ("eq", 5, "05", True),
        ("eq", "5", 5.0, True),
        ("eq", "05", "5", False),  # two texts compare as texts
        ("eq", 5, "1e3", False),  # plain decimal notation only
        ("eq", True, "true", False),  # booleans are never numbers or texts
        ("eq", 1, True, False),
        ("eq", True, True, True),
        ("eq", 5, [5], False),
        ("ne", "Shanghai", "Beijing", True),
        ("ne", "Shanghai", "Shanghai", False),
        ("ne", "Shanghai", None, False),  # absent: no comparison matches
        ("in", ["gold", 5], "5", True),
        ("in", ["gold", 5], "silver", False),
        ("contains", "ang", "Shanghai", True),
        ("contains", "ANG", "Shanghai", False),
        ("contains", "vip", ["vip", "new"], True),
        ("contains", 5, ["5"], True),
        ("contains", 5, "abc5", False),  # a substring needs a text
        ("gt", 18, "19", True),
        ("gt", 18, 18, False),
        ("gte", 18, 18.0, True),
        ("lt", 0, -0.5, True),
        ("lte", 2.5, "2.5", True),
        ("gt", 18, "old", False),
        ("gt", "2026-09-01", "2026-09-01T00:00:01Z", True),
        ("gt", "2026-09-01", "2026-09-01T08:00:00+08:00", False),  # 00:00 UTC: equal, not after
        ("gte", "2026-09-01", "2026-09-01T08:00:00+08:00", True),
        ("lt", "2026-09-01", "2026-08-31 23:59:59.999999", True),
        ("lt", "2026-09-01", "2026-02-30", False),  # not a calendar day: not a time
        ("lt", "2026-09-01", 20260831, False),
        ("exists", None, "", True),
        ("exists", None, None, False),
        ("not_exists", None, None, True),
        ("not_exists", None, 0, False),
        ("within_days", 7, "2026-09-25", True),
        ("within_days", 7, "2026-09-24T11:59:59Z", False),
        ("within_days", 7, "2026-10-05", False),  # the future is not "the last 7 days"
        ("older_than_days", 7, "2026-09-24T11:59:59Z", True),
        ("older_than_days", 7, "2026-09-25", False),
    ],
)
def test_trait_operators(op, value, trait, expected):
    rule = {"trait": "t", "op": op} | ({} if value is None else {"value": value})
    traits = {} if trait is None else {"t": trait}

    assert matches(rule, traits=traits) is expected


def test_a_missing_trait_matches_only_not_exists_and_not():
    assert not matches({"trait": "city", "op": "ne", "value": "Shanghai"})
    assert matches({"not": {"trait": "city", "op": "eq", "value": "Shanghai"}})
    assert matches({"trait": "city", "op": "not_exists"}, traits={"city": None})


def test_value_time_reads_offsets_dates_and_fractions():
    assert value_time("2026-09-01T08:00:00+08:00") == datetime(2026, 9, 1, tzinfo=UTC)
    assert value_time("2026-09-01") == datetime(2026, 9, 1, tzinfo=UTC)
    assert value_time("2026-09-01 10:30") == datetime(2026, 9, 1, 10, 30, tzinfo=UTC)
    assert value_time("2025-01-01T00:00:00.5-01:30") == datetime(2025, 1, 1, 1, 30, 0, 500_000, tzinfo=UTC)
    assert value_time("2028-02-29") is not None
    assert [value_time(v) for v in ("2027-02-29", "2026-9-1", "2026-09-01T24:00", "0999-01-01", 5)] == [
        None
    ] * 5


# --- identifiers, aggregates, loyalty, tags, segments -----------------------------------------


def test_has_identifier_built_in_and_custom_types():
    assert matches({"has_identifier": "phone"}, identifier_types=frozenset({"phone"}))
    assert matches({"has_identifier": "loyalty_no"}, identifier_types=frozenset({"loyalty_no"}))
    assert not matches({"has_identifier": "email"}, identifier_types=frozenset({"phone"}))


FIGURES = {
    "orders": 3, "spend": Decimal("450.00"), "refunded": Decimal(0), "average_order_value": Decimal("150.00"),
    "orders_pos": 2, "spend_pos": Decimal("300.00"), "orders_mini_program": 0, "events": 9,
    "first_purchase_at": NOW - 100 * DAY, "last_purchase_at": NOW - 3 * DAY, "last_event_at": NOW - DAY,
    "stores_visited": ["BJ02", "SH01"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "with_figures", "without"),
    [
        ({"aggregate": "orders", "op": "gte", "value": 3}, True, False),
        ({"aggregate": "orders", "op": "eq", "value": 0}, False, True),  # no figures: 0 orders
        ({"aggregate": "spend", "op": "gt", "value": 449.99}, True, False),
        ({"aggregate": "spend_pos", "op": "eq", "value": 300}, True, False),
        ({"aggregate": "orders_mini_program", "op": "eq", "value": 0}, True, True),
        ({"aggregate": "events_web", "op": "lt", "value": 1}, True, True),  # a key not in the row: 0
        ({"aggregate": "average_order_value", "op": "ne", "value": 1}, True, False),  # null never matches
        ({"aggregate": "average_order_value", "op": "lte", "value": 150}, True, False),
        ({"aggregate": "last_purchase_at", "op": "within_days", "value": 30}, True, False),
        ({"aggregate": "first_purchase_at", "op": "older_than_days", "value": 90}, True, False),
        ({"aggregate": "first_purchase_at", "op": "before", "value": "2026-06-24"}, True, False),
        ({"aggregate": "first_purchase_at", "op": "after", "value": "2026-06-23T12:00:00Z"}, False, False),
        ({"aggregate": "last_event_at", "op": "after", "value": "2026-09-30"}, True, False),
        ({"aggregate": "stores_visited", "op": "contains", "value": "SH01"}, True, False),
        ({"aggregate": "stores_visited", "op": "count_gte", "value": 2}, True, False),
        ({"aggregate": "stores_visited", "op": "count_lte", "value": 0}, False, True),
    ],
)
def test_aggregate_operators_and_the_defaults_of_a_member_without_figures(rule, with_figures, without):
    assert matches(rule, aggregates=FIGURES) is with_figures
    assert matches(rule) is without


def test_points_tier_tags_and_segments():
    assert matches({"points": {"op": "gte", "value": 1000}}, points=1000)
    assert not matches({"points": {"op": "gt", "value": 0}})  # no account: 0 points
    assert matches({"points": {"op": "lt", "value": 0}}, points=-5)
    assert matches({"tier": {"in": ["gold", "black"]}}, tier="black")
    assert matches({"tier": {"eq": "gold"}}, tier="gold")
    assert not matches({"tier": {"in": ["gold"]}})  # no account: no tier
    assert matches({"tag": "vip"}, tags=frozenset({"vip"}))
    assert not matches({"tag": "vip"}, tags=frozenset({"staff"}))
    assert matches({"segment": "gold-shanghai"}, segments=frozenset({"gold-shanghai"}))


# --- behaviour --------------------------------------------------------------------------------


def order(days_ago: float, channel: str = "pos", **properties: object) -> EventFact:
    return EventFact(
        "Order Completed", NOW - days_ago * DAY, channel, "SH01" if channel == "pos" else "", properties
    )


def test_did_at_least_and_at_most_in_a_window_with_filters():
    events = (order(1, category="shoes"), order(10, category="bags"), order(40, "app"), order(30))

    assert matches({"event": "Order Completed", "in_last_days": 30}, events=events)
    assert matches(
        {"event": "Order Completed", "in_last_days": 30, "at_least": 3}, events=events
    )  # 30 days ago counts
    assert not matches({"event": "Order Completed", "in_last_days": 30, "at_least": 4}, events=events)
    assert matches({"event": "Order Completed", "at_least": 4}, events=events)  # no window: ever
    assert matches({"event": "Order Completed", "in_last_days": 30, "at_most": 3}, events=events)
    assert not matches({"event": "Order Completed", "in_last_days": 60, "at_most": 3}, events=events)
    assert matches({"event": "Order Completed", "where": {"channel": "app"}, "at_least": 1, "at_most": 1},
                   events=events)  # fmt: skip
    assert matches({"event": "Order Completed", "where": {"store_code": "SH01", "properties.category": "shoes"},
                    "in_last_days": 7}, events=events)  # fmt: skip
    assert not matches({"event": "Order Completed", "where": {"properties.category": "shoes"}, "in_last_days": 1},
                       events=(order(1.01, category="shoes"),))  # fmt: skip
    assert not matches({"event": "Product Viewed"}, events=events)
    assert matches({"event": "Order Completed", "where": {"properties.size": 38}},
                   events=(order(1, size="38"),))  # fmt: skip


def test_did_not_first_time_and_stopped():
    shoes = {"event": "Order Completed", "where": {"channel": "pos"}}

    assert matches({"did_not": shoes}, events=(order(1, "app"),))
    assert not matches({"did_not": {**shoes, "in_last_days": 30}}, events=(order(30),))
    assert matches({"did_not": {**shoes, "in_last_days": 30}}, events=(order(31),))

    assert matches({"first_time": {**shoes, "in_last_days": 7}}, events=(order(2), order(3)))
    assert not matches({"first_time": {**shoes, "in_last_days": 7}}, events=(order(2), order(100)))
    assert matches({"first_time": {**shoes, "in_last_days": 7}}, events=(order(2), order(100, "app")))
    assert not matches({"first_time": {**shoes, "in_last_days": 7}}, events=(order(8),))

    stopped = {"stopped": {**shoes, "in_last_days": 30, "before_days": 60}}
    assert matches(stopped, events=(order(45),))
    assert not matches(stopped, events=(order(45), order(5)))  # still buying
    assert not matches(stopped, events=(order(91),))  # before the 60 days before
    assert matches(stopped, events=(order(90),))


def test_the_gold_shanghai_example():
    rule = {
        "all": [
            {"tier": {"in": ["gold"]}},
            {"trait": "city", "op": "eq", "value": "Shanghai"},
            {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30},
            {"did_not": {"event": "Order Completed", "where": {"channel": "mini_program"}}},
        ]
    }
    zhang = {"tier": "gold", "traits": {"city": "Shanghai"}, "events": (order(3),)}

    assert matches(rule, **zhang)
    assert not matches(rule, **{**zhang, "events": (order(3), order(200, "mini_program"))})


# --- stored counts of all time (the incremental refresh) -------------------------------------


POS = EventFilter("Order Completed", (("channel", "pos"),))
MINI = EventFilter("Order Completed", (("channel", "mini_program"),))


def test_leaves_over_all_time_read_the_stored_counts_when_given():
    recent = (order(2),)  # all the incremental path reads: the window's events
    counts = {event_filter_key(POS): 40, event_filter_key(MINI): 0}
    ever = {"event": "Order Completed", "where": {"channel": "pos"}}

    assert matches({**ever, "at_least": 40}, events=recent, event_counts=counts)
    assert not matches({**ever, "at_least": 41}, events=recent, event_counts=counts)
    assert not matches({"did_not": ever}, events=recent, event_counts=counts)
    assert matches(
        {"did_not": {**ever, "where": {"channel": "mini_program"}}}, events=recent, event_counts=counts
    )
    # A first time: in the window, and all of the filter's events of all time are the window's.
    assert not matches({"first_time": {**ever, "in_last_days": 7}}, events=recent, event_counts=counts)
    once = {event_filter_key(POS): 1}
    assert matches({"first_time": {**ever, "in_last_days": 7}}, events=recent, event_counts=once)
    assert not matches({"first_time": {**ever, "in_last_days": 1}}, events=recent, event_counts=once)
    twice = {event_filter_key(POS): 2}  # one before the window
    assert not matches({"first_time": {**ever, "in_last_days": 7}}, events=recent, event_counts=twice)
    # A windowed leaf counts the events, whatever the counts say.
    assert not matches({**ever, "in_last_days": 30, "at_least": 2}, events=recent, event_counts=counts)
    # Without a count of its filter (or without counts) a leaf counts the events.
    assert matches({"did_not": {**ever, "where": {"channel": "app"}}}, events=recent, event_counts=counts)
    assert not matches({**ever, "at_least": 2}, events=recent)
    assert matches({**ever, "at_least": 2}, events=(*recent, order(100)), event_counts={})


def test_a_filter_key_is_canonical_and_tells_apart_what_matches_apart():
    both = EventFilter("Order Completed", (("channel", "pos"), ("properties.size", Decimal(38))))
    swapped = EventFilter("Order Completed", (("properties.size", Decimal(38)), ("channel", "pos")))
    assert event_filter_key(both) == event_filter_key(swapped)
    assert event_filter_key(both) == '["Order Completed",[["channel","pos"],["properties.size",38]]]'
    sized = [
        EventFilter("X", (("properties.v", value),)) for value in (Decimal(1), "1", True, Decimal("1.5"))
    ]
    assert len({event_filter_key(f) for f in sized}) == 4
    assert event_filter_key(EventFilter("X")) != event_filter_key(EventFilter("Y"))
    parsed = rule_parse({"did_not": {"event": "X", "where": {"properties.v": 1}}})
    assert event_filter_key(parsed.event) == event_filter_key(sized[0])


def test_counts_move_by_the_events_passing_each_filter():
    filters = {event_filter_key(f): f for f in (POS, MINI)}
    events = (order(1), order(2, "mini_program"), order(3), EventFact("Product Viewed", NOW, "pos"))

    assert event_counts_add({}, events, filters) == {event_filter_key(POS): 2, event_filter_key(MINI): 1}
    stored = {event_filter_key(POS): 5, "a rule removed since": 3}
    assert event_counts_add(stored, events, filters) == {event_filter_key(POS): 7, event_filter_key(MINI): 1}


def test_the_demo_rules_read_their_windows_and_count_never_in_the_mini_program():
    windows, ever = event_reads(rule_parse(rule) for _, _, rule in DEMO_SEGMENTS)

    # "Bought in a store in the 90 days before the last 60" reaches furthest back; "never in the
    # mini-program" reads no event at all, and a first time only its window.
    pos, sneakers = (
        EventFilter("Order Completed", (("channel", "pos"),)),
        EventFilter("Product Viewed", (("properties.category", "Shoes/Sneakers"),)),
    )
    assert dict(windows.values()) == {
        pos: 150, EventFilter("Order Completed"): 30, sneakers: 30
    }  # fmt: skip
    assert ever == {'["Order Completed",[["channel","mini_program"]]]': MINI}
    first = rule_parse({"first_time": {"event": "Signed Up", "in_last_days": 7}})
    signed_up = EventFilter("Signed Up")
    assert event_reads([first]) == ({f"7:{event_filter_key(signed_up)}": (signed_up, 7)},
                                    {'["Signed Up",[]]': signed_up})  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(member=generated.members, rule=generated.rules, earlier=st.lists(st.integers(0, 24 * 40), max_size=3))
def test_stored_counts_and_times_decide_as_the_whole_history(member, rule, earlier):
    """What the incremental refresh evaluates when it reads no event at all (the counts of
    all time and the times of the windowed leaves' filters its figures keep, each refresh
    adding its part of the events and dropping what its window no longer holds, ``earlier``
    hours before now) answers as a member's whole history does, and sets the same recheck."""
    condition = rule_parse(rule)
    whole = generated.facts(1, member)
    filters, ever = event_reads([condition])
    refreshes = [*sorted(NOW - timedelta(hours=hours) for hours in earlier), NOW]
    times: dict[str, list[datetime]] = {}
    for n, at in enumerate(refreshes):
        times = event_times_add(times, whole.events[n :: len(refreshes)], filters, at)
    stored = MemberFacts(
        member_id=1, traits=whole.traits, identifier_types=whole.identifier_types, aggregates=whole.aggregates,
        points=whole.points, tier=whole.tier, tags=whole.tags, segments=whole.segments, consents=whole.consents,
        event_counts=event_counts_add({}, whole.events, ever),
        event_times={event_filter_key(wanted): times[key] for key, (wanted, _) in filters.items()},
    )  # fmt: skip

    assert rule_matches(condition, stored, now=NOW) == rule_matches(condition, whole, now=NOW)
    assert rule_window_expiry(condition, stored, NOW) == rule_window_expiry(condition, whole, NOW)


def test_the_demo_rules_keep_the_times_of_their_windowed_filters():
    filters, _ = event_reads(rule_parse(rule) for _, _, rule in DEMO_SEGMENTS)
    pos = EventFilter("Order Completed", (("channel", "pos"),))
    # "Bought in a store in the 90 days before the last 60" keeps 150 days of store orders.
    assert filters[f"150:{event_filter_key(pos)}"] == (pos, 150)
    old, recent = NOW - 200 * DAY, NOW - 100 * DAY
    events = [EventFact("Order Completed", at, "pos") for at in (recent, old)] + [
        EventFact("Order Completed", NOW, "app")
    ]
    kept = event_times_add({}, events, filters, NOW)
    assert kept[f"150:{event_filter_key(pos)}"] == [recent]


# --- references and time ----------------------------------------------------------------------


def test_references_name_tags_segments_and_whether_time_matters():
    refs = rule_references(rule_parse({"any": [
        {"tag": "vip"}, {"not": {"segment": "staff"}}, {"event": "Order Completed", "at_least": 2},
        {"aggregate": "last_purchase_at", "op": "after", "value": "2026-01-01"},
    ]}))  # fmt: skip
    assert (refs.tags, refs.segments, refs.time_based) == ({"vip"}, {"staff"}, False)

    for timed in (
        {"trait": "born", "op": "within_days", "value": 3},
        {"aggregate": "last_purchase_at", "op": "older_than_days", "value": 90},
        {"event": "Order Completed", "in_last_days": 30},
        {"did_not": {"event": "Order Completed", "in_last_days": 30}},
        {"first_time": {"event": "Order Completed", "in_last_days": 30}},
        {"stopped": {"event": "Order Completed", "in_last_days": 30, "before_days": 30}},
    ):
        assert rule_references(rule_parse({"not": timed})).time_based, timed


def test_window_expiry_is_when_the_answer_may_change_and_it_does_change_then():
    rule = rule_parse({"event": "Order Completed", "in_last_days": 30, "at_least": 2})
    facts = MemberFacts(member_id=1, events=(order(5), order(20), order(40)))

    expiry = rule_window_expiry(rule, facts, NOW)

    assert expiry == NOW + 10 * DAY + timedelta(microseconds=1)  # the order of 20 days ago leaves the window
    assert rule_matches(rule, facts, now=expiry - timedelta(microseconds=1))
    assert not rule_matches(rule, facts, now=expiry)
    assert rule_window_expiry(rule_parse({"tag": "vip"}), facts, NOW) is None
    born = rule_parse({"trait": "signup", "op": "within_days", "value": 7})
    assert rule_window_expiry(born, MemberFacts(1, traits={"signup": "2026-09-28"}), NOW) == datetime(
        2026, 10, 5, 0, 0, 0, 1, tzinfo=UTC
    )


@settings(max_examples=300, deadline=None)
@given(member=generated.members, rule=generated.rules)
def test_nothing_changes_before_the_window_expiry(member, rule):
    condition = rule_parse(rule)
    facts = generated.facts(1, member)
    expiry = rule_window_expiry(condition, facts, NOW)
    answer = rule_matches(condition, facts, now=NOW)
    if not rule_references(condition).time_based:
        assert expiry is None
    if expiry is None:
        for later in (NOW + DAY, NOW + 1000 * DAY):
            assert rule_matches(condition, facts, now=later) == answer
        return
    assert expiry > NOW
    for later in (NOW + (expiry - NOW) / 2, expiry - timedelta(microseconds=1)):
        assert rule_matches(condition, facts, now=later) == answer


@settings(max_examples=300, deadline=None)
@given(
    ages=st.lists(st.integers(-5 * 24 * 3600, 400 * 24 * 3600), max_size=40),
    edges=st.lists(
        st.sampled_from([datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]), max_size=2
    ),
    days=st.integers(1, MAX_DAYS),
    before=st.integers(1, 400),
    now=st.sampled_from([NOW, datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)]),
    stored=st.booleans(),
)
def test_window_expiry_is_the_soonest_time_leaving_a_window_after_now(ages, edges, days, before, now, stored):
    """Each windowed leaf's soonest moment is found from its earliest time still in the window
    (not by adding the window to every time): the same as the soonest of every time plus the
    window, unsorted times, times at the calendar's ends and windows reaching past them included."""
    times = [*edges]
    for seconds in ages:
        try:
            times.append(now - timedelta(seconds=seconds))
        except OverflowError:
            continue
    facts = (
        MemberFacts(1, event_times={event_filter_key(EventFilter("Order Completed")): sorted(times)})
        if stored
        else MemberFacts(1, events=tuple(EventFact("Order Completed", at, "pos") for at in times))
    )

    def soonest(offsets: list[int]) -> datetime | None:
        leaving = []
        for at in times:
            for offset in offsets:
                try:
                    leaving.append(at + timedelta(days=offset, microseconds=1))
                except OverflowError:
                    continue
        return min((m for m in leaving if m > now), default=None)

    did = rule_parse({"event": "Order Completed", "in_last_days": days})
    stopped = rule_parse(
        {"stopped": {"event": "Order Completed", "in_last_days": days, "before_days": before}}
    )
    assert rule_window_expiry(did, facts, now) == soonest([days])
    assert rule_window_expiry(stopped, facts, now) == soonest([days, days + before])
