"""The member refresh's incremental path (``members.incremental``) equals the full recompute
from the log: generated histories of orders, refunds, identifies with traits, product views
and sign-ups arrive in chunks in time order, with occasional late events and merges (an
identify joining a person's till phone and app id), under the demo's loyalty program and
segments; after each chunk the pipeline resolves and refreshes. What the refreshes kept (traits,
figures, orders, ledger, balance and tier, tags and segment memberships) is then compared with
what ``members_rebuild`` recomputes from every event."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.db import transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cdp.metrics import POINTS_DERIVATIONS, REFRESH_EVENTS_READ, REFRESH_FULL_REASONS, REFRESH_PATHS
from cdp.vault import trait_open
from events.pipeline import events_process_pending
from members import services as member_services
from members.loyalty.demo import loyalty_demo_setup
from members.loyalty.models import PointsAccount, PointsEntry
from members.models import MemberAggregate, MemberOrder, MemberTrait, RefreshWatermark
from members.segments.demo import segments_demo_setup
from members.segments.models import MemberTag, Segment, SegmentMember
from members.segments.rules.interpret import window_key
from members.segments.rules.syntax import EventFilter, event_filter_key

START = datetime(2026, 6, 1, 12, tzinfo=UTC)
#: Rules counting over all time besides the demo's "never in the mini-program": a filter on
#: the channel, on a property (of an event that earns nothing) and a first time.
EVER_SEGMENTS = (
    ("twice-at-the-till", {"event": "Order Completed", "where": {"channel": "pos"}, "at_least": 2}),
    ("never-in-the-app", {"did_not": {"event": "Order Completed", "where": {"channel": "app"}}}),
    ("at-most-one-refund", {"event": "Order Refunded", "at_most": 1}),
    ("bags-for-the-first-time", {"first_time": {"event": "Product Viewed", "where": {"properties.category": "Bags"},
                                                "in_last_days": 60}}),
    ("ever-viewed-shoes", {"event": "Product Viewed", "where": {"properties.category": "Shoes/Sneakers"}}),
)  # fmt: skip
PLANS = ("free", "plus", "pro")
CATEGORIES = ("Shoes/Sneakers", "Bags")


@st.composite
def histories(draw: st.DrawFn) -> list[list[tuple]]:
    """Chunks of events (name, person, channel, order number, amount in cents, hours since the
    history's start, extra), in time order but for the late ones."""
    people = draw(st.integers(min_value=1, max_value=3))
    hours = 0
    orders: dict[int, list[str]] = {p: [] for p in range(people)}
    chunks: list[list[tuple]] = []
    for _ in range(draw(st.integers(min_value=2, max_value=6))):
        chunk = []
        for _ in range(draw(st.integers(min_value=1, max_value=6))):
            hours += draw(st.integers(min_value=1, max_value=72))
            person = draw(st.integers(min_value=0, max_value=people - 1))
            channel = draw(st.sampled_from(["pos", "app"]))
            late = draw(st.sampled_from([0] * 9 + [1]))
            at = hours - late * draw(st.integers(min_value=1, max_value=200))
            kind = draw(st.sampled_from(["Order Completed"] * 3 + ["Order Refunded", "identify", "Product Viewed",
                                                                   "Signed Up", "merge"]))  # fmt: skip
            if kind == "Order Refunded" and not orders[person]:
                kind = "Order Completed"
            if kind == "Order Completed":
                number = f"{person}-{len(orders[person])}"
                orders[person].append(number)
                chunk.append((kind, person, channel, number, draw(st.integers(100, 60_000)), at, ""))
            elif kind == "Order Refunded":
                number = draw(st.sampled_from(orders[person]))
                chunk.append((kind, person, channel, number, draw(st.integers(1, 30_000)), at, ""))
            elif kind == "identify":
                chunk.append((kind, person, channel, "", 0, at, draw(st.sampled_from(PLANS))))
            elif kind == "Product Viewed":
                chunk.append((kind, person, "app", "", 0, at, draw(st.sampled_from(CATEGORIES))))
            else:
                chunk.append((kind, person, "app", "", 0, at, ""))
        chunks.append(chunk)
    return chunks


def _post(event: tuple, sources: dict) -> None:
    from tests.factories import EventFactory

    name, person, channel, number, cents, hours, extra = event
    phone, anonymous = f"1390000001{person}", f"anon-{person}"
    at = START - timedelta(days=150) + timedelta(hours=hours)
    # A person's till events carry their phone, their app events their anonymous id: two
    # members until an identify (a "merge") names both.
    who = {"anonymous_id": "", "context": {"traits": {"phone": phone}}} if channel == "pos" else {
        "anonymous_id": anonymous}  # fmt: skip
    common = {"source": sources[channel], "user_id": "", "timestamp": at}
    if name == "merge":
        EventFactory.create(type="identify", anonymous_id=anonymous, traits={"phone": phone}, **common)
    elif name == "identify":
        EventFactory.create(
            type="identify", traits={"plan": extra, "city": f"city-{hours % 3}"}, **who, **common
        )
    elif name in ("Order Completed", "Order Refunded"):
        properties = {"order_id": number, "total": f"{cents / 100:.2f}", "currency": "CNY"}
        if name == "Order Completed":
            properties["products"] = [{"sku": f"S{cents % 7}", "category": CATEGORIES[cents % 2],
                                       "price": f"{cents / 100:.2f}", "quantity": 1}]  # fmt: skip
        EventFactory.create(event=name, properties=properties, **who, **common)
    else:
        EventFactory.create(event=name, properties={"category": extra} if extra else {}, **who, **common)


def _state() -> dict:
    """What the refresh keeps, comparable between the two paths."""
    return {
        # Sealed values differ by their nonce: compared opened.
        "traits": {
            (member_id, key, repr(trait_open(key, value)), *rest)
            for member_id, key, value, *rest in MemberTrait.objects.values_list(
                "member_id", "key", "value", "observed_at", "channel", "source_id", "event_id"
            )
        },
        "figures": {
            row["member_id"]: {k: v for k, v in row.items() if k != "computed_at"}
            for row in MemberAggregate.objects.values()
        },
        "orders": set(MemberOrder.objects.values_list("member_id", "source_id", "order_id", "currency", "total",
                                                      "refunded", "placed_at", "channel", "store_code", "event_id")),
        "ledger": set(PointsEntry.objects.values_list("id", "member_id", "cause_key", "points")),
        "accounts": set(PointsAccount.objects.values_list("member_id", "balance", "tier")),
        "tags": set(MemberTag.objects.values_list("member_id", "tag_id")),
        "segments": set(SegmentMember.objects.values_list("member_id", "segment_id")),
    }  # fmt: skip


def _segments_create(segments: Iterable[tuple[str, dict]]) -> dict[str, Segment]:
    return {
        key: Segment.objects.create(key=key, name=key, kind=Segment.Kind.DYNAMIC, rule=rule)
        for key, rule in segments
    }


def _full_because(reason: str) -> float:
    return REFRESH_FULL_REASONS.labels(reason)._value.get()


def _refresh_paths() -> tuple[float, float]:
    return (REFRESH_PATHS.labels("incremental")._value.get(), REFRESH_PATHS.labels("full")._value.get())


def _program_with_time_in_it() -> None:
    """A program whose derivation carries state across refreshes: points that expire within
    the histories (the checkpoint's tail), bonuses earned once, pending points, a spend-based
    tier window with downgrades at monthly reviews."""
    from members.loyalty.models import EarnRule, LoyaltyProgram

    LoyaltyProgram.objects.update_or_create(
        key="default",
        defaults={"tier_basis": "spend", "tier_window_days": 30, "tier_downgrade": "one_step", "tier_review_months": 1,
                  "negative_balance": "forbid"},
    )  # fmt: skip
    EarnRule.objects.all().delete()
    EarnRule.objects.create(
        name="expiring", expiry="days", expiry_days=20, first_purchase_bonus=50, signup_bonus=30, pending_days=2,
        channel_multipliers={"pos": 2}, tier_multipliers={"gold": 3},
    )  # fmt: skip


@pytest.mark.django_db(transaction=False)
@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(chunks=histories(), expiring=st.booleans())
def test_incremental_refresh_equals_the_full_recompute(chunks: list[list[tuple]], expiring: bool):
    from tests.factories import SourceFactory

    # A refresh failing on a mix of members would still converge by bisecting the batch down
    # to single members (``members.services``): no batch may fail at all here.
    with (
        mock.patch("django.utils.timezone.now", return_value=START),
        mock.patch.object(
            member_services, "_refresh_bisect", side_effect=AssertionError("a refresh batch failed")
        ),
        transaction.atomic(),
    ):
        loyalty_demo_setup(now=START - timedelta(days=60))
        if expiring:
            _program_with_time_in_it()
        segments_demo_setup()
        _segments_create(EVER_SEGMENTS)
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for chunk in chunks:
            for event in chunk:
                _post(event, sources)
            events_process_pending()
            member_services.members_refresh()
        incremental = _state()
        member_services.members_rebuild()
        assert _state() == incremental
        # What the incremental path's plan reads of the events members hold, kept by trigger.
        assert _tally() == _tally_counted()
        transaction.set_rollback(True)


def _tally() -> set[tuple[int, int, int]]:
    from identity.models import MemberEventTally

    return set(MemberEventTally.objects.exclude(events=0).values_list("member_id", "events", "events_sum"))


def _tally_counted() -> set[tuple[int, int, int]]:
    from django.db.models import Count, Sum

    from identity.models import EventResolution

    return {
        (row["member_id"], row["n"], row["s"])
        for row in EventResolution.objects.values("member_id").annotate(n=Count("*"), s=Sum("event_id"))
    }


@pytest.mark.django_db
def test_a_member_gaining_later_events_is_refreshed_from_those_alone():
    from tests.factories import SourceFactory

    with mock.patch("django.utils.timezone.now", return_value=START):
        segments_demo_setup()
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for n in range(10):
            _post(("Order Completed", 0, "pos", f"0-{n}", 1000 + n, n, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        assert RefreshWatermark.objects.count() == 1
        paths, read = _refresh_paths(), REFRESH_EVENTS_READ._value.get()
        resumed = POINTS_DERIVATIONS.labels("resumed")._value.get()
        _post(("Order Completed", 0, "pos", "0-10", 5000, 20, ""), sources)
        _post(("Order Refunded", 0, "pos", "0-3", 300, 21, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        incremental, full = _refresh_paths()
        assert (incremental - paths[0], full - paths[1]) == (1, 0)
        # The two new events alone: windowed rules (the demo's "stopped" rule looks 150 days
        # back, over all 11 completions here) read the times the figures keep, rules over all
        # time the counts; the points resume from the checkpoint with the two new events alone.
        assert REFRESH_EVENTS_READ._value.get() - read == 2
        stopped = EventFilter("Order Completed", (("channel", "pos"),))
        assert len(figures_times := MemberAggregate.objects.get().event_times[window_key(stopped, 150)]) == 11
        assert figures_times == sorted(figures_times)
        assert POINTS_DERIVATIONS.labels("resumed")._value.get() - resumed == 1
        figures = MemberAggregate.objects.get()
        assert (figures.orders, figures.events, figures.refunded) == (11, 12, 3)
        # A late event (before what is covered) goes the full way, and the metric says why.
        late = _full_because("late")
        _post(("Product Viewed", 0, "pos", "", 0, 5, "Bags"), sources)
        events_process_pending()
        member_services.members_refresh()
        assert _refresh_paths()[1] - full == 1
        assert _full_because("late") - late == 1
        assert MemberAggregate.objects.get().events == 13


@pytest.mark.django_db
def test_a_mark_for_events_already_read_costs_nothing_but_any_other_mark_recomputes():
    """Two workers: a refresh reads the events another batch committed meanwhile, and that
    batch's own mark then finds them covered (nothing to do), where a mark of another cause
    (consent recorded by staff, a manual tag, points) still recomputes the member."""
    from members.marks import members_mark_dirty
    from members.models import DirtyMark
    from tests.factories import SourceFactory

    with mock.patch("django.utils.timezone.now", return_value=START):
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for n in range(3):
            _post(("Order Completed", 0, "pos", f"0-{n}", 1000 + n, n, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        member_id = RefreshWatermark.objects.get().member_id
        settled = REFRESH_PATHS.labels("settled")._value.get()
        incremental, full = _refresh_paths()

        members_mark_dirty(member_ids=[member_id], from_events=True)
        member_services.members_refresh()
        assert REFRESH_PATHS.labels("settled")._value.get() - settled == 1
        assert _refresh_paths() == (incremental, full)
        assert not DirtyMark.objects.exists()

        members_mark_dirty(member_ids=[member_id], from_events=True)
        members_mark_dirty(member_ids=[member_id])  # another cause beside it
        marked = _full_because("marked")
        member_services.members_refresh()
        assert _refresh_paths() == (incremental, full + 1)
        assert _full_because("marked") - marked == 1


@pytest.mark.django_db
def test_events_swapped_between_members_are_not_taken_for_covered():
    """A replay can move one event into a member and another out: the count of events is as it
    was, the sum of their ids is not, and the member is recomputed from the log."""
    from identity.models import EventResolution
    from tests.factories import SourceFactory

    with mock.patch("django.utils.timezone.now", return_value=START):
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for person in (0, 1):
            for n in range(2):
                _post(("Order Completed", person, "pos", f"{person}-{n}", 1000 + n, n, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        first, second = sorted(RefreshWatermark.objects.values_list("member_id", flat=True))
        mine = EventResolution.objects.filter(member_id=first).order_by("event_id").first()
        theirs = EventResolution.objects.filter(member_id=second).order_by("event_id").first()
        assert mine is not None
        assert theirs is not None
        EventResolution.objects.filter(pk=mine.pk).update(member_id=second)
        EventResolution.objects.filter(pk=theirs.pk).update(member_id=first)
        _, full = _refresh_paths()
        moved = _full_because("moved")
        member_services.members_update({first, second}, {first, second})
        assert _refresh_paths()[1] - full == 2
        assert _full_because("moved") - moved == 2


@pytest.mark.django_db
def test_rules_over_all_time_cost_a_long_history_nothing():
    """A loyal member's refresh reads their new events and the windows of windowed rules, not
    every order they ever made, however many: "never in the mini-program", "30 orders or more"
    and a first time's "never before" are decided from the counts their figures keep."""
    from tests.factories import SourceFactory

    never_mini = EventFilter("Order Completed", (("channel", "mini_program"),))
    with mock.patch("django.utils.timezone.now", return_value=START):
        segment = _segments_create([("loyal-newly-browsing", {"all": [
            {"did_not": {"event": "Order Completed", "where": {"channel": "mini_program"}}},
            {"event": "Order Completed", "at_least": 30},
            {"first_time": {"event": "Product Viewed", "in_last_days": 7}},
        ]})])["loyal-newly-browsing"]  # fmt: skip
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for n in range(40):
            _post(("Order Completed", 0, "pos", f"0-{n}", 1000 + n, n, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        figures = MemberAggregate.objects.get()
        assert figures.event_counts[event_filter_key(never_mini)] == 0
        assert figures.event_counts[event_filter_key(EventFilter("Order Completed"))] == 40
        assert not SegmentMember.objects.filter(segment=segment).exists()  # nothing viewed yet

        paths, read = _refresh_paths(), REFRESH_EVENTS_READ._value.get()
        _post(("Product Viewed", 0, "pos", "", 0, 150 * 24 - 30, "Bags"), sources)  # a day and 6 hours ago
        events_process_pending()
        member_services.members_refresh()

        assert _refresh_paths() == (paths[0] + 1, paths[1])
        # The new event (the plan) alone: the rules' window of views is in the figures' times.
        assert REFRESH_EVENTS_READ._value.get() - read == 1
        assert SegmentMember.objects.filter(segment=segment).exists()
        assert MemberAggregate.objects.get().event_counts == figures.event_counts | {
            event_filter_key(EventFilter("Product Viewed")): 1
        }


@pytest.mark.django_db
def test_a_rule_added_after_members_were_refreshed_decides_no_one_wrongly():
    """Members refreshed before a rule counting over all time existed hold no count of it: their
    next refresh goes the full way (reason "rules"), which counts it, and the one after goes
    incrementally again."""
    from tests.factories import SourceFactory

    with mock.patch("django.utils.timezone.now", return_value=START):
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for n in range(3):
            _post(("Order Completed", 0, "pos", f"0-{n}", 1000 + n, n, ""), sources)  # the till only
        _post(("Order Completed", 1, "app", "1-0", 1000, 1, ""), sources)  # once in the app
        events_process_pending()
        member_services.members_refresh()
        till, app = (
            MemberOrder.objects.filter(channel=channel).values_list("member_id", flat=True).first()
            for channel in ("pos", "app")
        )
        segment = _segments_create([("never-in-the-app", {"did_not": {"event": "Order Completed",
                                                                        "where": {"channel": "app"}}})])["never-in-the-app"]  # fmt: skip
        key = event_filter_key(EventFilter("Order Completed", (("channel", "app"),)))
        assert all(
            key not in counts for counts in MemberAggregate.objects.values_list("event_counts", flat=True)
        )

        (incremental, full), rules = _refresh_paths(), _full_because("rules")
        _post(("Product Viewed", 0, "pos", "", 0, 10, "Bags"), sources)
        _post(("Product Viewed", 1, "app", "", 0, 10, "Bags"), sources)
        events_process_pending()
        member_services.members_refresh()
        assert _refresh_paths() == (incremental, full + 2)
        assert _full_because("rules") - rules == 2
        assert set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True)) == {
            till
        }
        assert dict(MemberAggregate.objects.values_list("member_id", "event_counts")) == {
            till: {key: 0},
            app: {key: 1},
        }

        _post(("Product Viewed", 0, "pos", "", 0, 12, "Bags"), sources)
        _post(("Order Completed", 1, "app", "1-1", 1000, 12, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        assert _refresh_paths()[0] - incremental == 2  # the till member and the app member
        assert set(SegmentMember.objects.filter(segment=segment).values_list("member_id", flat=True)) == {
            till
        }
        assert MemberAggregate.objects.get(member_id=app).event_counts == {key: 2}


def _resolutions_read() -> int:
    """The resolution rows this transaction has fetched so far (by index or by scan)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(idx_tup_fetch, 0) + seq_tup_read FROM pg_stat_xact_user_tables "
            "WHERE relname = 'identity_eventresolution'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_planning_a_long_history_reads_only_the_new_events_resolutions():
    """Whether a member may go the incremental way is decided from identity's tally of the
    events they hold and the resolutions after their watermark: not from every resolution they
    ever had (which made a member with 1,000 events cost their refresh's backend about 1 ms
    more than one with 10, on every refresh)."""
    from tests.factories import SourceFactory

    with mock.patch("django.utils.timezone.now", return_value=START):
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for n in range(60):
            _post(("Product Viewed", 0, "pos", "", 0, n, ""), sources)
        events_process_pending()
        member_services.members_refresh()
        paths = _refresh_paths()
        _post(("Product Viewed", 0, "pos", "", 0, 100, ""), sources)
        before = _resolutions_read()
        events_process_pending()  # resolves the new event and refreshes the member
        read = _resolutions_read() - before
        assert _refresh_paths() == (paths[0] + 1, paths[1])
        assert MemberAggregate.objects.get().events == 61
        # The one new resolution, by the resolver and the plan: none of the 60 before it.
        assert read <= 5, read


@pytest.mark.django_db
def test_identitys_tally_follows_every_write_of_the_resolutions():
    """Inserts, re-resolutions (to the same member: nothing moves; to another: both change),
    upserts, deletes and TRUNCATE: the tally stays what the resolutions hold."""
    from django.db import connection

    from identity.models import EventResolution, MemberEventTally
    from tests.factories import SourceFactory

    def truth() -> dict[int, tuple[int, int]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT member_id, count(*), sum(event_id) FROM identity_eventresolution GROUP BY 1"
            )
            return {m: (n, int(s)) for m, n, s in cursor.fetchall()}

    def tally() -> dict[int, tuple[int, int]]:
        return {m: (n, s) for m, n, s in MemberEventTally.objects.values_list("member_id", "events", "events_sum")
                if n or s}  # fmt: skip

    with mock.patch("django.utils.timezone.now", return_value=START):
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        for person in (0, 1, 2):
            for n in range(3):
                _post(("Product Viewed", person, "pos", "", 0, n, ""), sources)
        _post(("merge", 1, "pos", "", 0, 5, ""), sources)  # an identify joining two members
        events_process_pending()
        assert tally() == truth()
        assert len(truth()) >= 3
        first, second, *_ = sorted(truth())
        moved = EventResolution.objects.filter(member_id=first).order_by("event_id").first()
        assert moved is not None
        EventResolution.objects.filter(member_id=second).update(problems=["x"])  # nobody moves
        assert tally() == truth()
        EventResolution.objects.filter(pk=moved.pk).update(member_id=second)
        assert tally() == truth()
        with connection.cursor() as cursor:  # the resolver's upsert: both triggers fire
            cursor.execute(
                "INSERT INTO identity_eventresolution (event_id, member_id, problems, resolved_at) "
                "SELECT event_id, %s, '[]', now() FROM identity_eventresolution WHERE member_id = %s "
                "ON CONFLICT (event_id) DO UPDATE SET member_id = EXCLUDED.member_id",
                [first, second],
            )
        assert tally() == truth()
        EventResolution.objects.filter(member_id=first).order_by("event_id")[:1].get().delete()
        assert tally() == truth()
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE identity_eventresolution")
        assert tally() == truth() == {}
