"""The rule language three ways: compiled to SQL over the real tables, evaluated in Python for
one member (rule_matches), and a plain reference written here from docs/rules.md, on generated
members and rules. All three must pick the same members."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import Event
from identity.models import EventResolution, Identifier, MemberIdentifier
from members.consent.models import ConsentStatement
from members.consent.statements import ConsentFact
from members.loyalty.models import PointsAccount
from members.models import Member, MemberAggregate
from members.segments.compile import counts_sql, rule_counts, rule_sql
from members.segments.models import MemberTag, Segment, SegmentMember, Tag
from members.segments.rules.interpret import EventFact, MemberFacts, rule_matches
from members.segments.rules.parse import rule_parse
from tests.factories import SourceFactory

NOW = datetime(2026, 10, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)

# --- the reference: values spelled out by hand ------------------------------------------------

#: Every text the generator uses, and the number / moment it stands for (None: not one).
TEXT_NUMBER = {
    "Shanghai": None, "shanghai": None, "Shang": None, "": None, "1e3": None, " 5": None,
    "5": Decimal(5), "05": Decimal(5), "5.0": Decimal(5), "-0.5": Decimal("-0.5"), "1000": Decimal(1000),
    "2026-09-25": None, "2026-09-30T20:00:00+08:00": None, "2026-09-01T08:00:00Z": None, "2026-02-30": None,
    "2026-09-25T10:00": None, "2025-01-01 00:00:00.5-01:30": None, "2026-10-05": None, "2026-9-25": None,
    "shoes": None, "bags": None, "gold": None,
}  # fmt: skip
TEXT_TIME = {
    "2026-09-25": datetime(2026, 9, 25, tzinfo=UTC),
    "2026-09-30T20:00:00+08:00": datetime(2026, 9, 30, 12, tzinfo=UTC),
    "2026-09-01T08:00:00Z": datetime(2026, 9, 1, 8, tzinfo=UTC),
    "2026-09-25T10:00": datetime(2026, 9, 25, 10, tzinfo=UTC),
    "2025-01-01 00:00:00.5-01:30": datetime(2025, 1, 1, 1, 30, 0, 500_000, tzinfo=UTC),
    "2026-10-05": datetime(2026, 10, 5, tzinfo=UTC),
}
TEXTS = sorted(TEXT_NUMBER)
NUMBERS = [5, 5.0, 0, -0.5, 10, 0.1, 1000, 2.5]
RULE_TIMES = ["2026-09-25", "2026-09-30T20:00:00+08:00", "2025-01-01 00:00:00.5-01:30", "2026-09-25T10:00"]


def ref_number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        return TEXT_NUMBER[value]
    return None


def ref_time(value):
    return TEXT_TIME.get(value) if isinstance(value, str) else None


def ref_equal(value, wanted):
    if value is None or isinstance(value, list | dict):
        return False
    if type(value) is bool or type(wanted) is bool:
        return value is wanted
    if type(value) is str and type(wanted) is str:
        return value == wanted
    a, b = ref_number(value), ref_number(wanted)
    return a is not None and b is not None and a == b


def ref_order(a, op, b):
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b, "eq": a == b, "ne": a != b}[op]


def ref_days(moment, op, days):
    if moment is None:
        return False
    if op == "within_days":
        return NOW - days * DAY <= moment <= NOW
    return moment < NOW - days * DAY


def ref_trait(rule, member):
    value, op, wanted = member["traits"].get(rule["trait"]), rule["op"], rule.get("value")
    if value == "SQL NULL":
        value = None
    if op == "exists":
        return value is not None
    if op == "not_exists":
        return value is None
    if value is None:
        return False
    if op == "eq":
        return ref_equal(value, wanted)
    if op == "ne":
        return not ref_equal(value, wanted)
    if op == "in":
        return any(ref_equal(value, w) for w in wanted)
    if op == "contains":
        if type(value) is list:
            return any(ref_equal(element, wanted) for element in value)
        return type(value) is str and type(wanted) is str and wanted in value
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(wanted, str):
            mine, wanted = ref_time(value), TEXT_TIME[wanted]
        else:
            mine, wanted = ref_number(value), Decimal(str(wanted))
        return mine is not None and ref_order(mine, op, wanted)
    return ref_days(ref_time(value), op, wanted)


def ref_aggregate(rule, member):
    name, op, wanted = rule["aggregate"], rule["op"], rule["value"]
    figures = member["aggregates"]
    if name == "stores_visited":
        stores = figures["stores_visited"] if figures else []
        if op == "contains":
            return wanted in stores
        return len(stores) >= wanted if op == "count_gte" else len(stores) <= wanted
    if name in ("first_purchase_at", "last_purchase_at", "last_event_at"):
        moment = figures[name] if figures else None
        if moment is None:
            return False
        if op == "before":
            return moment < TEXT_TIME[wanted]
        if op == "after":
            return moment > TEXT_TIME[wanted]
        return ref_days(moment, op, wanted)
    value = figures[name] if figures else (None if name == "average_order_value" else 0)
    return value is not None and ref_order(Decimal(value), op, Decimal(str(wanted)))


def ref_events(member, spec, start, end):
    """How many of the member's events match spec, at start or later and before end."""
    n = 0
    for event in member["events"]:
        if event["name"] != spec["event"]:
            continue
        if start is not None and event["at"] < start:
            continue
        if end is not None and event["at"] >= end:
            continue
        ok = True
        for key, wanted in spec.get("where", {}).items():
            if key == "channel":
                ok = ok and event["channel"] == wanted
            elif key == "store_code":
                ok = ok and event["store_code"] == wanted
            else:
                ok = ok and ref_equal(event["properties"].get(key.removeprefix("properties.")), wanted)
        n += ok
    return n


def ref(rule, member):
    if "all" in rule:
        return all(ref(r, member) for r in rule["all"])
    if "any" in rule:
        return any(ref(r, member) for r in rule["any"])
    if "not" in rule:
        return not ref(rule["not"], member)
    if "trait" in rule:
        return ref_trait(rule, member)
    if "has_identifier" in rule:
        return rule["has_identifier"] in {kind for kind, _ in member["identifiers"]}
    if "aggregate" in rule:
        return ref_aggregate(rule, member)
    if "event" in rule:
        days = rule.get("in_last_days")
        n = ref_events(member, rule, None if days is None else NOW - days * DAY, None)
        if "at_least" not in rule and "at_most" not in rule:
            return n >= 1
        return n >= rule.get("at_least", 0) and n <= rule.get("at_most", n)
    if "did_not" in rule:
        spec = rule["did_not"]
        days = spec.get("in_last_days")
        return ref_events(member, spec, None if days is None else NOW - days * DAY, None) == 0
    if "first_time" in rule:
        spec = rule["first_time"]
        start = NOW - spec["in_last_days"] * DAY
        return ref_events(member, spec, start, None) > 0 and ref_events(member, spec, None, start) == 0
    if "stopped" in rule:
        spec = rule["stopped"]
        start = NOW - spec["in_last_days"] * DAY
        earlier = ref_events(member, spec, start - spec["before_days"] * DAY, start)
        return ref_events(member, spec, start, None) == 0 and earlier > 0
    if "points" in rule:
        points = member["account"][0] if member["account"] else 0
        return ref_order(points, rule["points"]["op"], rule["points"]["value"])
    if "tier" in rule:
        tier = member["account"][1] if member["account"] else ""
        return tier in rule["tier"].get("in", [rule["tier"].get("eq")])
    if "tag" in rule:
        return rule["tag"] in member["tags"]
    if "segment" in rule:
        return rule["segment"] in member["segments"]
    if "consent" in rule:
        # The latest statement of the purpose at or before NOW (a tie in time: the later one
        # recorded, i.e. later in the list); granted only if it is a grant.
        stated = [(at, n, state) for n, (purpose, state, at) in enumerate(member.get("consents", ()))
                  if purpose == rule["consent"] and at <= NOW]  # fmt: skip
        return bool(stated) and max(stated)[2] == "granted"
    raise AssertionError(rule)


# --- generated members ------------------------------------------------------------------------

scalars = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS), st.booleans())
#: Each trait mostly holds values of its own kind, so that comparisons often match.
POOLS = {
    "city": ["Shanghai", "shanghai", "Shang", "", "5", "shoes"],
    "age": [5, 5.0, 0, -0.5, 10, 2.5, 1000, "5", "05", "5.0", "-0.5", "1000", "1e3", " 5", True],
    "since": [*TEXT_TIME, "2026-02-30", "2026-9-25", 5],
}


def pooled(key):
    return st.sampled_from(POOLS[key]) | st.sampled_from(POOLS[key]) | scalars if key in POOLS else scalars


def trait_values(key):
    return st.one_of(
        pooled(key), pooled(key), st.just(None), st.just("SQL NULL"), st.lists(pooled(key), max_size=3),
        st.just({"a": 5}),
    )  # fmt: skip


TRAIT_KEYS = ["city", "age", "since"]
IDENTIFIER_TYPES = ["phone", "email", "wechat_unionid", "loyalty_no"]
TAGS, SEGMENTS = ["vip", "staff"], ["gold-sh", "lapsed"]
EVENT_NAMES = ["Order Completed", "Product Viewed"]
CHANNELS = ["pos", "app", "mini_program", "web"]
STORES = ["", "SH01", "BJ02"]
CATEGORIES = ["shoes", "bags", 5, "5", None, True]
PURPOSES = ["marketing_sms", "analytics"]
moments = st.sampled_from([-1, 0, 1, 5, 29, 30, 31, 60, 200]).map(lambda days: NOW - days * DAY) | st.just(
    NOW - 30 * DAY + timedelta(microseconds=1)
)
money = st.sampled_from([Decimal(0), Decimal("99.50"), Decimal(300), Decimal("1000.01")])

aggregates = st.none() | st.fixed_dictionaries(
    {
        "orders": st.integers(0, 3), "spend": money, "refunded": money,
        "average_order_value": st.none() | money,
        "first_purchase_at": st.none() | moments, "last_purchase_at": st.none() | moments,
        **{f"orders_{c}": st.integers(0, 2) for c in CHANNELS}, **{f"spend_{c}": money for c in CHANNELS},
        "events": st.integers(0, 5), **{f"events_{c}": st.integers(0, 3) for c in CHANNELS},
        "last_event_at": st.none() | moments,
        "stores_visited": st.lists(st.sampled_from(STORES[1:]), unique=True, max_size=2).map(sorted),
    }
)  # fmt: skip
events = st.fixed_dictionaries(
    {
        "name": st.sampled_from(EVENT_NAMES), "at": moments, "channel": st.sampled_from(CHANNELS),
        "store_code": st.sampled_from(STORES),
        "properties": st.dictionaries(st.just("category"), st.sampled_from(CATEGORIES), max_size=1),
    }
)  # fmt: skip
members = st.fixed_dictionaries(
    {
        "traits": st.fixed_dictionaries(
            {key: trait_values(key) | st.just("ABSENT") for key in TRAIT_KEYS}
        ).map(lambda traits: {k: v for k, v in traits.items() if v != "ABSENT"}),
        "identifiers": st.lists(
            st.tuples(st.sampled_from(IDENTIFIER_TYPES), st.booleans()), max_size=2, unique_by=lambda i: i[0]
        ),
        "aggregates": aggregates,
        "events": st.lists(events, max_size=5),
        "account": st.none()
        | st.tuples(
            st.sampled_from([0, 500, 1000, 1500, -10]), st.sampled_from(["", "gold", "black", "silver"])
        ),
        "tags": st.frozensets(st.sampled_from(TAGS)),
        "segments": st.frozensets(st.sampled_from(SEGMENTS)),
        "consents": st.lists(
            st.tuples(
                st.sampled_from(PURPOSES), st.sampled_from(["granted", "denied", "withdrawn"]), moments
            ),
            max_size=4,
        ),
    }
)

# --- generated rules --------------------------------------------------------------------------

days = st.sampled_from([0, 1, 5, 7, 30, 400])
window = st.sampled_from([1, 5, 30, 31, 60])


def trait_rules_on(key):
    return st.one_of(
        st.builds(lambda op, v: {"trait": key, "op": op, "value": v}, st.sampled_from(["eq", "ne", "contains"]),
                  pooled(key)),
        st.builds(lambda v: {"trait": key, "op": "in", "value": v}, st.lists(pooled(key), min_size=1, max_size=3)),
        st.builds(lambda op, v: {"trait": key, "op": op, "value": v}, st.sampled_from(["gt", "gte", "lt", "lte"]),
                  st.sampled_from(RULE_TIMES if key == "since" else NUMBERS) | st.sampled_from(NUMBERS + RULE_TIMES)),
        st.builds(lambda op: {"trait": key, "op": op}, st.sampled_from(["exists", "not_exists"])),
        st.builds(lambda op, v: {"trait": key, "op": op, "value": v},
                  st.sampled_from(["within_days", "older_than_days"]), days),
    )  # fmt: skip


trait_rules = st.sampled_from([*TRAIT_KEYS, "missing"]).flatmap(trait_rules_on)
NUMBER_AGGREGATES = ["orders", "spend", "refunded", "average_order_value", "events",
                     *(f"{f}_{c}" for f in ("orders", "spend", "events") for c in CHANNELS)]  # fmt: skip
aggregate_rules = st.one_of(
    st.builds(lambda n, op, v: {"aggregate": n, "op": op, "value": v}, st.sampled_from(NUMBER_AGGREGATES),
              st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), st.sampled_from([0, 1, 2, 99.5, 300])),
    st.builds(lambda n, op, v: {"aggregate": n, "op": op, "value": v},
              st.sampled_from(["first_purchase_at", "last_purchase_at", "last_event_at"]),
              st.sampled_from(["before", "after"]), st.sampled_from(RULE_TIMES)),
    st.builds(lambda n, op, v: {"aggregate": n, "op": op, "value": v},
              st.sampled_from(["first_purchase_at", "last_purchase_at", "last_event_at"]),
              st.sampled_from(["within_days", "older_than_days"]), days),
    st.builds(lambda v: {"aggregate": "stores_visited", "op": "contains", "value": v}, st.sampled_from(STORES[1:])),
    st.builds(lambda op, v: {"aggregate": "stores_visited", "op": op, "value": v},
              st.sampled_from(["count_gte", "count_lte"]), st.integers(0, 2)),
)  # fmt: skip
where = st.fixed_dictionaries(
    {},
    optional={
        "channel": st.sampled_from(CHANNELS), "store_code": st.sampled_from(STORES),
        "properties.category": st.sampled_from([c for c in CATEGORIES if c is not None]),
    },
)  # fmt: skip


def spec(**optional):
    return st.fixed_dictionaries(
        {"event": st.sampled_from(EVENT_NAMES)}, optional={"where": where, **optional}
    )


behaviour_rules = st.one_of(
    spec(in_last_days=window, at_least=st.integers(0, 3), at_most=st.integers(0, 3)),
    spec(in_last_days=window).map(lambda s: {"did_not": s}),
    st.builds(lambda s, d: {"first_time": {**s, "in_last_days": d}}, spec(), window),
    st.builds(
        lambda s, d, b: {"stopped": {**s, "in_last_days": d, "before_days": b}}, spec(), window, window
    ),
)
other_rules = st.one_of(
    st.builds(lambda t: {"has_identifier": t}, st.sampled_from([*IDENTIFIER_TYPES, "member_card"])),
    st.builds(lambda op, v: {"points": {"op": op, "value": v}}, st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
              st.sampled_from([0, 500, 1000])),
    st.builds(lambda t: {"tier": {"in": t}}, st.lists(st.sampled_from(["gold", "black"]), min_size=1, unique=True)),
    st.builds(lambda t: {"tier": {"eq": t}}, st.sampled_from(["gold", "silver"])),
    st.builds(lambda t: {"tag": t}, st.sampled_from([*TAGS, "other"])),
    st.builds(lambda s: {"segment": s}, st.sampled_from([*SEGMENTS, "other"])),
    st.builds(lambda p: {"consent": p}, st.sampled_from([*PURPOSES, "personalization"])),
)  # fmt: skip
leaves = st.one_of(trait_rules, aggregate_rules, behaviour_rules, other_rules)
rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"all": items}),
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"any": items}),
        children.map(lambda item: {"not": item}),
    ),
    max_leaves=6,
)

# --- writing them -----------------------------------------------------------------------------


def write(generated: list[dict]) -> list[int]:
    source = SourceFactory.create()
    tags = {key: Tag.objects.create(key=key, name=key, kind="manual") for key in TAGS}
    segments = {key: Segment.objects.create(key=key, name=key, kind="static") for key in SEGMENTS}
    ids = []
    stamps = {f"{e}_event_{f}": v for e in ("first", "last") for f, v in
              (("at", NOW), ("message_id", "m"), ("source_id", source.pk))}  # fmt: skip
    with connection.cursor() as cursor:
        for index, data in enumerate(generated):
            member = Member.objects.create(**stamps)
            ids.append(member.pk)
            for key, value in data["traits"].items():
                cursor.execute(
                    "INSERT INTO members_membertrait (member_id, key, value, observed_at, channel, source_id,"
                    " event_id) VALUES (%s, %s, %s::jsonb, %s, 'web', %s, 0)",
                    [member.pk, key, None if value == "SQL NULL" else json.dumps(value), NOW, source.pk],
                )
            for kind, held in data["identifiers"]:
                identifier = Identifier.objects.create(
                    type=kind, value=f"{kind}-{index}", member=None if held else member
                )
                if held:
                    MemberIdentifier.objects.create(member=member, identifier=identifier)
            if data["aggregates"] is not None:
                MemberAggregate.objects.create(member=member, currency="CNY", **data["aggregates"])
            rows = Event.objects.bulk_create(
                Event(source=source, message_id=f"{member.pk}-{n}", type="track", event=e["name"],
                      channel=e["channel"], store_code=e["store_code"], timestamp=e["at"], received_at=NOW,
                      properties=e["properties"])
                for n, e in enumerate(data["events"])
            )  # fmt: skip
            EventResolution.objects.bulk_create(EventResolution(event=row, member=member) for row in rows)
            if data["account"] is not None:
                PointsAccount.objects.create(
                    member=member, balance=data["account"][0], tier=data["account"][1]
                )
            MemberTag.objects.bulk_create(MemberTag(member=member, tag=tags[key]) for key in data["tags"])
            SegmentMember.objects.bulk_create(
                SegmentMember(member=member, segment=segments[key], entered_at=NOW)
                for key in data["segments"]
            )
            for purpose, state, at in data.get("consents", ()):  # ids in list order
                ConsentStatement.objects.create(
                    member=member, subject_id=member.pk, purpose=purpose, state=state, at=at, origin="staff"
                )
    return ids


def facts(member_id: int, data: dict) -> MemberFacts:
    account = data["account"] or (0, "")
    return MemberFacts(
        member_id=member_id,
        traits={k: None if v == "SQL NULL" else v for k, v in data["traits"].items()},
        identifier_types=frozenset(kind for kind, _ in data["identifiers"]),
        aggregates=data["aggregates"] or {},
        events=tuple(
            EventFact(e["name"], e["at"], e["channel"], e["store_code"], e["properties"])
            for e in data["events"]
        ),
        points=account[0],
        tier=account[1],
        tags=data["tags"],
        segments=data["segments"],
        # Ranked by their place in the list, as the ids the statements get when written.
        consents=tuple(
            ConsentFact(p, state, at, n) for n, (p, state, at) in enumerate(data.get("consents", ()))
        ),
    )


def selected(rule: object, *, all_members: bool = False, counted: bool = False) -> set[int]:
    """The members the rule's SQL picks: probing a batch, in one pass over all members, or
    (``counted``) reading the behaviour counts a full recompute gathers for every rule at once."""
    condition = rule_parse(rule)
    counts = (
        {c: f"c{i}" for i, c in enumerate(dict.fromkeys(rule_counts(condition, now=NOW)))} if counted else {}
    )
    sql, params = rule_sql(condition, now=NOW, all_members=all_members or counted, counts=counts,
                           counts_table="rule_counts_test")  # fmt: skip
    with connection.cursor() as cursor:
        if counts:
            cursor.execute(*counts_sql(list(counts), table="rule_counts_test"))
        cursor.execute(f"SELECT m.id FROM members_member m WHERE m.status = 'active' AND ({sql})", params)
        found = {row[0] for row in cursor.fetchall()}
        if counts:
            cursor.execute("DROP TABLE rule_counts_test")
    return found


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(generated=st.lists(members, min_size=1, max_size=4), checked=st.lists(rules, min_size=1, max_size=6))
def test_sql_python_and_the_reference_pick_the_same_members(generated, checked):
    with transaction.atomic():
        ids = write(generated)
        for rule in checked:
            expected = {i for i, data in zip(ids, generated, strict=True) if ref(rule, data)}
            condition = rule_parse(rule)
            in_python = {i for i, data in zip(ids, generated, strict=True)
                         if rule_matches(condition, facts(i, data), now=NOW)}  # fmt: skip
            assert in_python == expected, rule
            assert selected(rule) == expected, rule
            assert selected(rule, all_members=True) == expected, rule
            assert selected(rule, counted=True) == expected, rule
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_the_gold_shanghai_store_not_mini_program_example():
    rule = {
        "all": [
            {"tier": {"in": ["gold"]}},
            {"trait": "city", "op": "eq", "value": "Shanghai"},
            {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30},
            {"did_not": {"event": "Order Completed", "where": {"channel": "mini_program"}}},
        ]
    }
    base = {"traits": {"city": "Shanghai"}, "identifiers": [], "aggregates": None, "account": (0, "gold"),
            "tags": frozenset(), "segments": frozenset()}  # fmt: skip
    store = {
        "name": "Order Completed",
        "at": NOW - 3 * DAY,
        "channel": "pos",
        "store_code": "SH01",
        "properties": {},
    }
    mini = {**store, "channel": "mini_program", "store_code": "", "at": NOW - 90 * DAY}
    old_store = {**store, "at": NOW - 31 * DAY}
    generated = [
        {**base, "events": [store]},
        {**base, "events": [store, mini]},
        {**base, "events": [old_store]},
        {**base, "events": [store], "account": (0, "silver")},
        {**base, "events": [store], "traits": {"city": "Beijing"}},
    ]
    ids = write(generated)

    assert selected(rule) == selected(rule, all_members=True) == selected(rule, counted=True) == {ids[0]}
    assert [rule_matches(rule_parse(rule), facts(i, d), now=NOW) for i, d in zip(ids, generated, strict=True)] == [
        True, False, False, False, False,
    ]  # fmt: skip


@pytest.mark.django_db
def test_behaviour_reads_events_through_the_resolution_index():
    sql, params = rule_sql(
        rule_parse({"event": "Order Completed", "in_last_days": 30, "at_least": 2}), now=NOW
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN SELECT m.id FROM members_member m WHERE ({sql})", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "resolution_by_member" in plan


@pytest.mark.django_db
def test_consent_in_force_is_the_latest_statement_at_or_before_now_ties_to_the_later_recorded():
    sms = "marketing_sms"
    base = {"traits": {}, "identifiers": [], "aggregates": None, "events": [], "account": None,
            "tags": frozenset(), "segments": frozenset()}  # fmt: skip
    cases = [
        ([(sms, "granted", NOW - 5 * DAY)], True),
        ([(sms, "granted", NOW - 5 * DAY), (sms, "withdrawn", NOW)], False),  # at NOW it is in force
        (
            [(sms, "withdrawn", NOW), (sms, "granted", NOW - 5 * DAY)],
            False,
        ),  # event time, not the order written
        ([(sms, "denied", NOW), (sms, "granted", NOW)], True),  # one instant: the later recorded
        ([(sms, "granted", NOW), (sms, "denied", NOW)], False),
        ([(sms, "granted", NOW - 5 * DAY), (sms, "denied", NOW + DAY)], True),  # not in force yet
        ([(sms, "granted", NOW + DAY)], False),
        ([("analytics", "granted", NOW - 5 * DAY)], False),  # another purpose
        ([], False),
    ]
    generated = [{**base, "consents": consents} for consents, _ in cases]
    wanted = [answer for _, answer in cases]
    ids = write(generated)
    rule = {"consent": sms}

    assert [ref(rule, data) for data in generated] == wanted
    assert [
        rule_matches(rule_parse(rule), facts(i, d), now=NOW) for i, d in zip(ids, generated, strict=True)
    ] == wanted
    expected = {i for i, answer in zip(ids, wanted, strict=True) if answer}
    assert selected(rule) == selected(rule, all_members=True) == selected({"not": {"not": rule}}) == expected
