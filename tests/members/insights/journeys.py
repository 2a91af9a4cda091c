"""Generated cross-channel journeys written straight into the tables insights read (members and
their merges, events and their resolutions, orders, tiers, segment memberships, consent to
``analytics``), and the same journeys as the plain-Python references read them."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from events.models import Event, Source
from identity.models import EventResolution
from members.consent.statements import DENIED, GRANTED, WITHDRAWN
from members.insights.attribution import Conversion, Touch
from members.insights.funnels import MemberEvent
from members.loyalty.models import PointsAccount
from members.models import Member, MemberOrder
from members.segments.models import Segment, SegmentMember
from tests.factories import SourceFactory
from tests.factories.consent import consent_state

T0 = datetime(2026, 9, 1, tzinfo=UTC)
NAMES = ("Product Viewed", "Product Added", "Order Completed", "Push Opened", "Coupon Claimed")
CHANNELS = ("pos", "app", "mini_program", "web")
PROPERTY_VALUES = (1, "1", "x", True)
SEGMENTS = ("s1", "s2")
#: A person's ``analytics`` consent: the states they stated, in order, a day apart ending before
#: the insight runs (none: never stated, so not analysed; the last state is the one in force).
CONSENT_HISTORIES = ((GRANTED,), (GRANTED,), (GRANTED,), (), (DENIED,), (GRANTED, WITHDRAWN),
                     (DENIED, GRANTED), (GRANTED, DENIED))  # fmt: skip

#: Coarse times, so that ties (ordered by event id) are frequent: within three days (funnel
#: windows, lookbacks), or over two months (cohort periods).
CLOSE = st.integers(0, 72 * 60).map(lambda m: m - m % 60)
SPREAD = st.integers(0, 60 * 24 * 60).map(lambda m: m - m % 90)


def person_st(minutes: st.SearchStrategy[int] = CLOSE) -> st.SearchStrategy[dict[str, Any]]:
    """A person: their events (some resolved to a member later absorbed by a merge), orders,
    tier and segments."""
    events = st.fixed_dictionaries(
        {
            "name": st.sampled_from(NAMES),
            "channel": st.sampled_from(CHANNELS),
            "store_code": st.sampled_from(("", "S1", "S2")),
            "minutes": minutes,
            "properties": st.dictionaries(st.just("k"), st.sampled_from(PROPERTY_VALUES), max_size=1),
            "campaign": st.sampled_from(("", "", "spring", "vip")),
            "source": st.sampled_from(("", "wechat", "baidu")),
        }
    )
    orders = st.fixed_dictionaries(
        {
            "minutes": minutes,
            "total": st.integers(1, 50_000).map(lambda cents: Decimal(cents) / 100),
            "refunded_share": st.sampled_from((0, 0, 0, 1, 2)),  # quarters refunded
            "channel": st.sampled_from(CHANNELS),
            "currency": st.sampled_from(("CNY", "CNY", "USD")),
        }
    )
    return st.fixed_dictionaries(
        {
            "events": st.lists(events, max_size=12),
            "absorbed_events": st.lists(events, max_size=4),
            "orders": st.lists(orders, max_size=4),
            "tier": st.sampled_from(("", "gold", "silver", None)),
            "segments": st.lists(st.sampled_from(SEGMENTS), max_size=2, unique=True),
            "analytics": st.sampled_from(CONSENT_HISTORIES),
        }
    )


@dataclass
class Written:
    events: list[MemberEvent] = field(default_factory=list)
    touches: list[Touch] = field(default_factory=list)
    conversions: list[Conversion] = field(default_factory=list)
    orders: list[tuple[int, datetime, int, str]] = field(default_factory=list)  # member, at, id, channel
    tiers: dict[int, str] = field(default_factory=dict)
    segments_of: dict[int, list[str]] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    analysed: set[int] = field(default_factory=set)  # members whose analytics consent is in force

    def of_analysed(self) -> "Written":
        """The same journeys with only the analysed members' part: what insights may read."""
        keep = self.analysed
        return Written(
            events=[e for e in self.events if e.member in keep],
            touches=[t for t in self.touches if t.member in keep],
            conversions=[c for c in self.conversions if c.member in keep],
            orders=[o for o in self.orders if o[0] in keep],
            tiers={m: t for m, t in self.tiers.items() if m in keep},
            segments_of={m: s for m, s in self.segments_of.items() if m in keep},
            members=[m for m in self.members if m.pk in keep],
            sources=self.sources,
            analysed=keep,
        )


def _context(data: dict[str, Any]) -> dict[str, Any]:
    if not data["campaign"] and not data["source"]:
        return {}
    return {"campaign": {k: v for k, v in (("name", data["campaign"]), ("source", data["source"])) if v}}


def write(people: list[dict[str, Any]]) -> Written:
    out = Written()
    out.sources = {
        c: SourceFactory.create(kind=c, **({"store_code": "S9"} if c == "pos" else {})) for c in CHANNELS
    }
    segments = {key: Segment.objects.create(key=key, name=key, kind="static") for key in SEGMENTS}
    stamps = {f"{e}_event_{f}": v for e in ("first", "last") for f, v in
              (("at", T0), ("message_id", "m"), ("source_id", out.sources["web"].pk))}  # fmt: skip
    message = 0
    for index, person in enumerate(people):
        member = Member.objects.create(**stamps)
        out.members.append(member)
        absorbed = Member.objects.create(**stamps, status="merged", merged_into=member)
        for owner, listed in ((member, person["events"]), (absorbed, person["absorbed_events"])):
            rows = []
            for data in listed:
                message += 1
                rows.append(Event(
                    source=out.sources[data["channel"]], message_id=f"{index}-{message}", type="track",
                    event=data["name"], channel=data["channel"], store_code=data["store_code"],
                    timestamp=T0 + timedelta(minutes=data["minutes"]), received_at=T0,
                    properties=data["properties"], context=_context(data),
                ))  # fmt: skip
            Event.objects.bulk_create(rows)
            EventResolution.objects.bulk_create(EventResolution(event=row, member=owner) for row in rows)
            for row, data in zip(rows, listed, strict=True):
                out.events.append(MemberEvent(member.pk, row.pk, row.timestamp, row.event, row.channel,
                                              row.store_code, row.properties))  # fmt: skip
                if data["campaign"] or data["source"] or data["name"] in ("Push Opened", "Coupon Claimed"):
                    source = data["source"] or {"Push Opened": "push", "Coupon Claimed": "coupon"}.get(
                        data["name"], ""
                    )
                    campaign = data["campaign"]
                    out.touches.append(Touch(member.pk, row.pk, row.timestamp, row.channel, row.store_code,
                                             campaign, source))  # fmt: skip
        for n, data in enumerate(person["orders"]):
            total = data["total"]
            refunded = (total * data["refunded_share"] / 4).quantize(Decimal("0.01"))
            at = T0 + timedelta(minutes=data["minutes"])
            order = MemberOrder.objects.create(
                member=absorbed if n % 2 else member, source_id=out.sources[data["channel"]].pk,
                order_id=f"o-{index}-{n}", currency=data["currency"], total=total, refunded=refunded,
                placed_at=at, channel=data["channel"], store_code="", event_id=0,
            )  # fmt: skip
            out.orders.append((member.pk, at, order.pk, data["channel"]))
            if data["currency"] == "CNY":
                out.conversions.append(Conversion(order.pk, member.pk, at, max(total - refunded, Decimal(0))))
        if person["tier"] is not None:
            PointsAccount.objects.create(member=member, tier=person["tier"])
            out.tiers[member.pk] = person["tier"]
        SegmentMember.objects.bulk_create(
            SegmentMember(segment=segments[key], member=member, entered_at=T0) for key in person["segments"]
        )
        out.segments_of[member.pk] = person["segments"]
        # Stated on the surviving member (statements follow merges to it), a day apart, the
        # last a day before the insight runs.
        history = person.get("analytics", (GRANTED,))
        for days_ago, state in zip(range(len(history), 0, -1), history, strict=True):
            consent_state(
                [member.pk], state, purposes=["analytics"], at=datetime.now(UTC) - timedelta(days=days_ago)
            )
        if history and history[-1] == GRANTED:
            out.analysed.add(member.pk)
    return out
