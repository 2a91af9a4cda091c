"""Computed tags: the pure decisions (lifecycle windows and their boundaries, channel preference,
RFM scores and groups) and the set-based full compute, which must give every member exactly
what ``computed_tags_of`` gives them, record each change once and change nothing when run
again."""

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from members.models import Member, MemberAggregate
from members.segments.builtins import computed_tags_compute_all, rfm_cutoffs_compute, rfm_edges_load
from members.segments.computed import (
    COMPUTED_TAG_KEYS,
    COMPUTED_TAGS,
    RFM_GROUPS,
    TICK,
    LifecycleWindows,
    PurchaseFacts,
    RfmEdges,
    channel_preference,
    computed_tags_of,
    lifecycle_changes_at,
    lifecycle_stage,
    rfm_group,
    rfm_scores,
)
from members.segments.models import MemberTag, RfmCutoffs, Tag, TagChange
from tests.factories.members import MemberAggregateFactory, MemberFactory

NOW = datetime(2026, 10, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
WINDOWS = LifecycleWindows(new_days=30, active_days=90, churn_days=180)

# --- lifecycle ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_days", "last_days", "stage"),
    [
        (30, 0, "new"),  # first purchase exactly 30 days ago: still within 30 days
        (31, 90, "active"),
        (400, 90, "active"),  # last purchase exactly 90 days ago
        (400, 180, "at_risk"),  # exactly 180 days ago
        (400, 181, "churned"),
        (-1, -1, "new"),  # stamped in the future: recent
    ],
)
def test_lifecycle_windows_are_closed_at_their_old_end(first_days, last_days, stage):
    first, last = NOW - first_days * DAY, NOW - last_days * DAY

    assert lifecycle_stage(first, last, NOW, WINDOWS) == stage


@pytest.mark.parametrize(
    ("first", "last", "before", "after"),
    [
        (NOW - 30 * DAY, NOW - 30 * DAY, "new", "active"),
        (NOW - 400 * DAY, NOW - 90 * DAY, "active", "at_risk"),
        (NOW - 400 * DAY, NOW - 180 * DAY, "at_risk", "churned"),
    ],
)
def test_a_window_closes_one_microsecond_after_its_boundary(first, last, before, after):
    assert lifecycle_stage(first, last, NOW, WINDOWS) == before
    assert lifecycle_stage(first, last, NOW + TICK, WINDOWS) == after
    assert lifecycle_changes_at(first, last, NOW - DAY, WINDOWS) == NOW + TICK


def test_without_purchases_there_is_no_stage_and_no_change():
    assert lifecycle_stage(None, None, NOW, WINDOWS) is None
    assert lifecycle_changes_at(None, None, NOW, WINDOWS) is None
    assert lifecycle_changes_at(NOW - 400 * DAY, NOW - 200 * DAY, NOW, WINDOWS) is None  # churned for good


def test_a_stage_may_be_skipped_when_new_outlasts_active():
    windows = LifecycleWindows(new_days=100, active_days=30, churn_days=180)
    bought = NOW - 99 * DAY

    changes = lifecycle_changes_at(bought, bought, NOW, windows)

    assert changes == bought + 100 * DAY + TICK
    assert lifecycle_stage(bought, bought, changes, windows) == "at_risk"


@pytest.mark.parametrize(
    "arguments",
    [(0, 90, 180), (30, 0, 180), (30, 90, 0), (30, 200, 180), (30.5, 90, 180), (True, 90, 180)],
)
def test_windows_that_make_no_sense_are_refused(arguments):
    with pytest.raises(ValueError, match="days"):
        LifecycleWindows(*arguments)


moments = st.integers(min_value=-5 * 86_400, max_value=500 * 86_400).map(lambda s: NOW - timedelta(seconds=s))
windows_ = st.tuples(
    st.integers(1, 120), st.integers(1, 200), st.integers(0, 200)
).map(lambda t: LifecycleWindows(t[0], t[1], t[1] + t[2]))  # fmt: skip


@settings(max_examples=300)
@given(a=moments, b=moments, now=moments, windows=windows_, probes=st.lists(st.floats(0, 1), max_size=5))
def test_the_stage_changes_exactly_when_lifecycle_changes_at_says(a, b, now, windows, probes):
    first, last = min(a, b), max(a, b)
    stage = lifecycle_stage(first, last, now, windows)

    changes = lifecycle_changes_at(first, last, now, windows)

    if changes is None:
        assert lifecycle_stage(first, last, now + 10_000 * DAY, windows) == stage
        return
    assert changes > now
    assert lifecycle_stage(first, last, changes, windows) != stage
    assert lifecycle_stage(first, last, changes - TICK, windows) == stage
    for fraction in probes:
        probe = min(now + (changes - now) * fraction, changes - TICK)
        assert lifecycle_stage(first, last, probe, windows) == stage


# --- channel preference -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orders", "preference"),
    [
        ({"pos": 2}, "store_only"),
        ({"pos": 2, "app": 0, "mini_program": 0, "web": 0}, "store_only"),
        ({"app": 1}, "online_only"),
        ({"mini_program": 1, "web": 3}, "online_only"),
        ({"pos": 1, "web": 1}, "omnichannel"),
        ({"pos": 0, "app": 0}, None),
        ({}, None),
    ],
)
def test_channel_preference(orders, preference):
    assert channel_preference(orders) == preference


def test_an_unknown_channel_is_refused():
    with pytest.raises(ValueError, match="kiosk"):
        channel_preference({"pos": 1, "kiosk": 1})


# --- RFM ----------------------------------------------------------------------------------------

EDGES = RfmEdges(
    recency=(NOW - 200 * DAY, NOW - 100 * DAY, NOW - 50 * DAY, NOW - 10 * DAY),
    frequency=(1, 1, 2, 5),
    monetary=(Decimal("100.00"), Decimal("200.00"), Decimal("200.00"), Decimal("900.00")),
)


@pytest.mark.parametrize(
    ("last", "orders", "spend", "scores"),
    [
        (NOW - 200 * DAY, 1, Decimal("100.00"), (1, 1, 1)),  # equal to the lowest edges: score 1
        (NOW - 200 * DAY + TICK, 2, Decimal("100.01"), (2, 3, 2)),  # above 1 edge / 2 equal edges
        (NOW - 10 * DAY, 5, Decimal("200.00"), (4, 4, 2)),
        (NOW, 6, Decimal("900.01"), (5, 5, 5)),
    ],
)
def test_a_score_counts_the_edges_strictly_below_the_value(last, orders, spend, scores):
    assert rfm_scores(last, orders, spend, EDGES) == scores


@given(orders=st.integers(0, 10), spend=st.decimals(0, 1000, places=2), days=st.integers(0, 300))
def test_equal_values_get_equal_scores(orders, spend, days):
    last = NOW - days * DAY

    assert rfm_scores(last, orders, spend, EDGES) == rfm_scores(last, orders, spend, EDGES)
    one, other = rfm_scores(last, orders, spend, EDGES), rfm_scores(last, orders + 1, spend, EDGES)
    assert one[1] <= other[1]  # more orders never score lower


def test_edges_must_be_four_ascending():
    with pytest.raises(ValueError, match="frequency"):
        RfmEdges(recency=EDGES.recency, frequency=(1, 3, 2, 5), monetary=EDGES.monetary)
    with pytest.raises(ValueError, match="monetary"):
        RfmEdges(recency=EDGES.recency, frequency=EDGES.frequency, monetary=(Decimal(1),) * 3)


#: The grid as the issue states it, row R5 first, columns FM1..FM5.
GRID = """
R5 new            potential_loyalist potential_loyalist champions champions
R4 promising      potential_loyalist potential_loyalist loyal     loyal
R3 about_to_sleep about_to_sleep     need_attention     loyal     loyal
R2 hibernating    hibernating        at_risk            at_risk   cant_lose_them
R1 lost           hibernating        at_risk            at_risk   cant_lose_them
"""


def test_the_grid_is_total_and_each_cell_is_one_of_the_eleven_groups():
    expected = {int(row[1]): row.split()[1:] for row in GRID.strip().splitlines()}
    seen = Counter()
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                group = rfm_group(r, f, m)
                assert group == expected[r][(f + m + 1) // 2 - 1]
                seen[group] += 1
    assert set(seen) == set(RFM_GROUPS)
    assert len(RFM_GROUPS) == 11
    assert sum(seen.values()) == 125


@pytest.mark.parametrize("scores", [(0, 3, 3), (3, 6, 3), (3, 3, -1), (3, 3, True), (3.0, 3, 3)])
def test_a_score_outside_one_to_five_is_refused(scores):
    with pytest.raises(ValueError, match="score"):
        rfm_group(*scores)


# --- the tags -----------------------------------------------------------------------------------


def test_the_computed_tags_keys_and_names():
    keys = [tag.key for tag in COMPUTED_TAGS]

    assert len(keys) == len(set(keys)) == 18
    assert {"rfm-cant-lose-them", "lifecycle-at-risk", "channel-omnichannel", "channel-store-only"} <= set(
        keys
    )
    assert [tag.name for tag in COMPUTED_TAGS[:11]] == [
        "Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
        "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost",
    ]  # fmt: skip
    lifecycle_new = next(tag for tag in COMPUTED_TAGS if tag.key == "lifecycle-new")
    assert "14 days" in lifecycle_new.description_for(LifecycleWindows(14, 60, 120))


def test_computed_tags_of_a_buyer():
    purchases = PurchaseFacts(
        orders=6,
        spend=Decimal("950.00"),
        first_purchase_at=NOW - 300 * DAY,
        last_purchase_at=NOW - 5 * DAY,
        orders_by_channel={"pos": 4, "app": 2, "mini_program": 0, "web": 0},
    )

    assert computed_tags_of(purchases, EDGES, WINDOWS, NOW) == {
        "lifecycle-active",
        "channel-omnichannel",
        "rfm-champions",
    }
    assert computed_tags_of(purchases, None, WINDOWS, NOW) == {"lifecycle-active", "channel-omnichannel"}


@pytest.mark.parametrize(
    "purchases",
    [
        PurchaseFacts(),
        PurchaseFacts(orders=0, first_purchase_at=NOW, last_purchase_at=NOW, orders_by_channel={"pos": 1}),
        PurchaseFacts(orders=2, first_purchase_at=None, last_purchase_at=None, orders_by_channel={"pos": 2}),
    ],
)
def test_members_without_orders_get_no_computed_tag(purchases):
    assert computed_tags_of(purchases, EDGES, WINDOWS, NOW) == frozenset()


# --- the full compute against computed_tags_of ----------------------------------------------------

#: Moments around every window boundary the generator uses (1 / 30 / 90 / 180 days), a tick
#: either side, and the future.
MOMENTS = sorted(
    {NOW - d * DAY + t * TICK for d in (0, 1, 30, 90, 180, 181, 400) for t in (-1, 0, 1)} | {NOW + DAY}
)
SPENDS = [Decimal(v) for v in ("0.00", "10.00", "10.50", "99.99", "100.00", "250.00")]
sorted4 = lambda values: st.lists(values, min_size=4, max_size=4).map(sorted)  # noqa: E731

random_edges = st.builds(
    lambda r, f, m: RfmEdges(tuple(r), tuple(f), tuple(m)),
    sorted4(st.sampled_from(MOMENTS)),
    sorted4(st.integers(0, 6)),
    sorted4(st.sampled_from(SPENDS)),
)
figures = st.fixed_dictionaries(
    {
        "orders": st.integers(0, 7),
        "spend": st.sampled_from(SPENDS),
        "times": st.one_of(st.none(), st.lists(st.sampled_from(MOMENTS), min_size=2, max_size=2).map(sorted)),
        "orders_pos": st.integers(0, 2),
        "orders_app": st.integers(0, 2),
        "orders_mini_program": st.integers(0, 1),
        "orders_web": st.integers(0, 1),
    }
)
generated_members = st.fixed_dictionaries(
    {
        "merged": st.integers(0, 3).map(lambda n: n == 0),  # one in four absorbed by a merge
        "figures": st.none() | figures,
        "carried": st.sets(st.sampled_from(sorted(COMPUTED_TAG_KEYS)), max_size=3),
    }
)
windows_choice = st.sampled_from([(30, 90, 180), (1, 30, 90), (90, 30, 180), (30, 180, 180)])


def purchases_of(data: dict) -> PurchaseFacts:
    f = data["figures"]
    if f is None:
        return PurchaseFacts()
    first, last = f["times"] or (None, None)
    return PurchaseFacts(
        orders=f["orders"],
        spend=f["spend"],
        first_purchase_at=first,
        last_purchase_at=last,
        orders_by_channel={c: f[f"orders_{c}"] for c in ("pos", "app", "mini_program", "web")},
    )


def write(generated: list[dict]) -> list[Member]:
    tags = dict(Tag.objects.filter(kind="computed").values_list("key", "id"))
    survivor = MemberFactory()
    members = []
    for data in generated:
        member = MemberFactory.create(
            **({"status": "merged", "merged_into": survivor} if data["merged"] else {})
        )
        f = data["figures"]
        if f is not None:
            first, last = f["times"] or (None, None)
            MemberAggregateFactory(
                member=member, first_purchase_at=first, last_purchase_at=last,
                **{k: v for k, v in f.items() if k != "times"},
            )  # fmt: skip
        MemberTag.objects.bulk_create(MemberTag(member=member, tag_id=tags[key]) for key in data["carried"])
        members.append(member)
    return members


def carried_by(member_ids: list[int]) -> dict[int, set[str]]:
    carried: dict[int, set[str]] = {pk: set() for pk in member_ids}
    for member_id, key in MemberTag.objects.filter(
        member_id__in=member_ids, tag__kind="computed"
    ).values_list("member_id", "tag__key"):
        carried[member_id].add(key)
    return carried


def percentile_disc(values: list, fraction: float):
    """PostgreSQL's percentile_disc: the first value (in order) whose position reaches the
    fraction, the position computed in floating point as PostgreSQL does."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


@pytest.mark.django_db
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    generated=st.lists(generated_members, min_size=1, max_size=10),
    edges_from=st.sampled_from(["none", "random", "computed"]),
    edges=random_edges,
    window_days=windows_choice,
)
def test_the_full_compute_gives_every_member_what_computed_tags_of_gives(
    generated, edges_from, edges, window_days
):
    new_days, active_days, churn_days = window_days
    windows = LifecycleWindows(new_days, active_days, churn_days)
    with (
        transaction.atomic(),
        override_settings(LIFECYCLE_NEW_DAYS=new_days, LIFECYCLE_ACTIVE_DAYS=active_days,
                          LIFECYCLE_CHURN_DAYS=churn_days),
    ):  # fmt: skip
        RfmCutoffs.objects.all().delete()
        members = write(generated)
        ids = [m.pk for m in members]
        if edges_from == "random":
            RfmCutoffs.objects.create(recency=list(edges.recency), frequency=list(edges.frequency),
                                      monetary=list(edges.monetary), members=1, computed_at=NOW)  # fmt: skip
        elif edges_from == "computed":
            buyers = [purchases_of(d) for d in generated if not d["merged"]]
            buyers = [p for p in buyers if p.orders > 0 and p.last_purchase_at is not None]
            stored = rfm_cutoffs_compute(now=NOW)
            if not buyers:
                assert stored is None
            else:
                fractions = (0.2, 0.4, 0.6, 0.8)
                assert stored.members == len(buyers)
                assert stored.recency == [
                    percentile_disc([p.last_purchase_at for p in buyers], q) for q in fractions
                ]
                assert stored.frequency == [percentile_disc([p.orders for p in buyers], q) for q in fractions]
                assert stored.monetary == [percentile_disc([p.spend for p in buyers], q) for q in fractions]
        loaded = rfm_edges_load()
        before = carried_by(ids)
        changes_before = TagChange.objects.count()

        changed = computed_tags_compute_all(now=NOW)

        after = carried_by(ids)
        for member, data in zip(members, generated, strict=True):
            wanted = set() if data["merged"] else computed_tags_of(purchases_of(data), loaded, windows, NOW)
            assert after[member.pk] == wanted, data
        expected_log = Counter()
        for pk in ids:
            expected_log.update((pk, key, "added") for key in after[pk] - before[pk])
            expected_log.update((pk, key, "removed") for key in before[pk] - after[pk])
        log = Counter(
            TagChange.objects.filter(member_id__in=ids, by__isnull=True, at=NOW).values_list(
                "member_id", "tag__key", "action"
            )
        )
        assert log == expected_log
        assert changed == sum(expected_log.values()) == TagChange.objects.count() - changes_before

        assert computed_tags_compute_all(now=NOW) == 0
        assert carried_by(ids) == after
        assert TagChange.objects.count() - changes_before == changed
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_every_rfm_cell_and_every_lifecycle_boundary_in_sql():
    """Exhaustive where the generator is thin: a member for each (r, f, m), each score hit by a
    value equal to an edge (ties score low) or above all, and members on each side of each
    lifecycle boundary."""
    RfmCutoffs.objects.all().delete()
    recency = [NOW - 50 * DAY, NOW - 40 * DAY, NOW - 30 * DAY, NOW - 20 * DAY, NOW - DAY]
    RfmCutoffs.objects.create(recency=recency[:4], frequency=[1, 2, 3, 4], members=125, computed_at=NOW,
                              monetary=[Decimal(10), Decimal(20), Decimal(30), Decimal(40)])  # fmt: skip
    generated = [
        {"merged": False, "carried": set(), "figures": {
            "orders": f, "spend": Decimal(10 * m), "times": (NOW - 400 * DAY, recency[r - 1]),
            "orders_pos": 1, "orders_app": 0, "orders_mini_program": 0, "orders_web": 0}}
        for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)
    ]  # fmt: skip
    firsts = [NOW - 30 * DAY, NOW - 30 * DAY - TICK, NOW - 400 * DAY]
    lasts = [NOW - 30 * DAY, NOW - 90 * DAY, NOW - 90 * DAY - TICK, NOW - 180 * DAY, NOW - 180 * DAY - TICK]
    generated += [
        {"merged": False, "carried": set(), "figures": {
            "orders": 1, "spend": Decimal(1), "times": (first, last),
            "orders_pos": 0, "orders_app": 0, "orders_mini_program": 0, "orders_web": 1}}
        for first in firsts for last in lasts if first <= last
    ]  # fmt: skip
    members = write(generated)
    edges = rfm_edges_load()

    computed_tags_compute_all(now=NOW)

    carried = carried_by([m.pk for m in members])
    for member, data in zip(members, generated, strict=True):
        assert carried[member.pk] == computed_tags_of(purchases_of(data), edges, WINDOWS, NOW), data
    groups = Counter(key for keys in carried.values() for key in keys if key.startswith("rfm-"))
    stages = Counter(key for keys in carried.values() for key in keys if key.startswith("lifecycle-"))
    assert len(groups) == 11
    assert set(stages) == {"lifecycle-new", "lifecycle-active", "lifecycle-at-risk", "lifecycle-churned"}


@pytest.mark.django_db
def test_an_absorbed_member_loses_its_computed_tags():
    survivor = MemberAggregateFactory(orders=1, spend=Decimal("10.00"), first_purchase_at=NOW - DAY,
                                      last_purchase_at=NOW - DAY, orders_web=1).member  # fmt: skip
    absorbed = MemberAggregateFactory(orders=2, spend=Decimal("10.00"), first_purchase_at=NOW - DAY,
                                      last_purchase_at=NOW - DAY, orders_pos=2).member  # fmt: skip
    computed_tags_compute_all(now=NOW)
    assert carried_by([absorbed.pk]) == {absorbed.pk: {"lifecycle-new", "channel-store-only"}}

    Member.objects.filter(pk=absorbed.pk).update(status="merged", merged_into=survivor)
    MemberAggregate.objects.filter(member=absorbed).delete()
    changed = computed_tags_compute_all(now=NOW)

    assert changed == 2
    assert carried_by([absorbed.pk, survivor.pk]) == {
        absorbed.pk: set(),
        survivor.pk: {"lifecycle-new", "channel-online-only"},
    }


@pytest.mark.django_db
def test_no_rfm_tag_until_cutoffs_were_computed_and_none_without_buyers():
    RfmCutoffs.objects.all().delete()
    buyer = MemberAggregateFactory(orders=3, spend=Decimal("300.00"), first_purchase_at=NOW - 100 * DAY,
                                   last_purchase_at=NOW - 2 * DAY, orders_app=3).member  # fmt: skip
    MemberAggregateFactory()  # figures but no orders

    computed_tags_compute_all(now=NOW)
    assert carried_by([buyer.pk]) == {buyer.pk: {"lifecycle-active", "channel-online-only"}}

    stored = rfm_cutoffs_compute(now=NOW)
    computed_tags_compute_all(now=NOW)

    # One buyer: every edge is their own figure, so every score is 1.
    assert (stored.members, stored.frequency, stored.computed_at) == (1, [3, 3, 3, 3], NOW)
    assert carried_by([buyer.pk]) == {buyer.pk: {"lifecycle-active", "channel-online-only", "rfm-lost"}}
    assert list(RfmCutoffs.objects.values_list("pk", flat=True)) == [stored.pk]

    MemberAggregate.objects.update(orders=0)
    assert rfm_cutoffs_compute(now=NOW + DAY) is None
    assert RfmCutoffs.objects.get().computed_at == NOW  # the last edges stay
