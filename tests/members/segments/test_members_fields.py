"""A segment's members page with ``fields=``: what each field reads, masking by role, the audit
of contact details shown in full, and one query per page. The members here consented to every
purpose (leaving out those who did not: ``tests/members/consent/test_outflows.py``)."""

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from cdp.models import AuditEntry
from cdp.privacy import Masking
from cdp.roles import Role
from identity.models import Identifier
from identity.selectors import identifier_lookup_values
from members.consent.statements import marketing_purposes
from members.loyalty.models import PointsAccount
from members.models import Member, MemberAggregate, MemberTrait
from members.segments.exports import FIELDS, fields_parse, segment_rows
from members.segments.models import MemberTag, Segment, SegmentMember, Tag
from members.segments.services import segment_static_set
from members.selectors import CONTACT_FIELDS, trait_shown
from tests.factories.consent import consent_grant
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db

T = datetime(2026, 10, 1, 9, tzinfo=UTC)
EVERYTHING = (
    "name,phone,email,orders,spend,currency,average_order_value,first_purchase_at,last_purchase_at,"
    "last_event_at,points,tier,tags,member_card,user_id,identifiers.phone,identifiers.email,traits.city"
)


@pytest.fixture
def zhang(zhang: dict) -> dict:
    """Zhang Wei (``tests/members/conftest.py``), who consented to every purpose."""
    consent_grant([zhang["member"]])
    return zhang


def segment_of(key: str, member_ids: Iterable[int]) -> Segment:
    segment = Segment.objects.create(key=key, name=key.title(), kind="static")
    SegmentMember.objects.bulk_create(
        SegmentMember(segment=segment, member_id=m, entered_at=T) for m in member_ids
    )
    return segment


def members_create(
    count: int, traits: dict[str, object] | None = None, *, granted: bool = True,
    **by_index: Callable[[int], object],
) -> list[int]:  # fmt: skip
    """``count`` members written straight into the tables (thousands in a second): each with
    ``traits``, plus ``by_index[key](i)`` per member when given; a phone or email trait that is
    an identifier is also the member's identifier, as the pipeline would make it. ``granted``:
    each has consented to every purpose."""
    members = Member.objects.bulk_create(
        Member(first_event_at=T, first_event_message_id=f"m{i}", first_event_source_id=1, last_event_at=T,
               last_event_message_id=f"m{i}", last_event_source_id=1)
        for i in range(count)
    )  # fmt: skip
    rows = []
    for index, member in enumerate(members):
        stated = dict(traits or {})
        stated.update({key: make(index) for key, make in by_index.items()})
        rows += [
            MemberTrait(
                member=member, key=key, value=value, observed_at=T, channel="web", source_id=1, event_id=1
            )
            for key, value in stated.items()
        ]
    MemberTrait.objects.bulk_create(rows)
    Identifier.objects.bulk_create(
        Identifier(type=row.key, value=identifier_lookup_values(row.key, str(row.value))[0],
                   member_id=row.member_id, last_seen_at=T)
        for row in rows
        if row.key in CONTACT_FIELDS and trait_shown(row.key, row.value) is not None
    )  # fmt: skip
    if granted:
        consent_grant([m.pk for m in members])
    return [m.pk for m in members]


def page(role: Role, key: str, query: str = "") -> dict:
    response = staff_client(role).get(f"/api/v1/segments/{key}/members/?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_each_field_reads_the_members_profile_figures_points_identifiers_and_tags(zhang):
    segment = segment_static_set(
        segment=Segment.objects.create(key="list", name="List", kind="static"), member_ids=[zhang["member"]]
    )
    vip = Tag.objects.create(key="vip", name="VIP", kind="manual")
    MemberTag.objects.create(member_id=zhang["member"], tag=vip)
    PointsAccount.objects.filter(member_id=zhang["member"]).update(tier="gold")

    [member] = page(Role.MARKETING, segment.key, f"fields={EVERYTHING}")["results"]
    computed = set(
        MemberTag.objects.filter(member_id=zhang["member"], tag__kind="computed").values_list(
            "tag__key", flat=True
        )
    )

    assert {"channel-omnichannel"} < computed
    assert member == {
        "member_id": zhang["member"],
        "entered_at": member["entered_at"],
        "name": "Z***",  # a name is personal (PERSONAL_DATA_KEYS): masked like a phone
        "phone": "138****8000",
        "email": "z***@example.com",
        "orders": 2,
        "spend": "320.00",  # 300 at the till, 100 of it refunded, 120 in the app
        "currency": "CNY",
        "average_order_value": "160.00",
        "first_purchase_at": "2026-09-01T10:05:00Z",
        "last_purchase_at": "2026-09-02T10:03:00Z",
        "last_event_at": "2026-09-04T10:00:00Z",
        "points": 320,  # the default program: a point per yuan
        "tier": "gold",
        # The manual tag and those the platform computed (lifecycle, channel preference).
        "tags": sorted({"vip"} | computed),
        "member_card": "MC-0042",
        "user_id": None,
        "identifiers.phone": ["138****8000"],
        "identifiers.email": ["z***@example.com"],
        "traits.city": None,
    }
    assert not AuditEntry.objects.filter(
        action=AuditEntry.Action.VIEW_CONTACT_DETAILS
    ).exists()  # nothing in full


def test_without_fields_a_member_is_its_id_and_when_it_entered(zhang):
    segment = segment_of("list", [zhang["member"]])

    assert page(Role.MARKETING, segment.key)["results"] == [
        {"member_id": zhang["member"], "entered_at": "2026-10-01T09:00:00Z"}
    ]


def test_a_member_without_figures_or_points_gets_what_nothing_sums_to():
    [member_id] = members_create(1)
    segment = segment_of("bare", [member_id])

    [member] = page(
        Role.MARKETING, segment.key, "fields=orders,spend,currency,points,tier,tags,last_purchase_at"
    )["results"]

    assert member == {"member_id": member_id, "entered_at": "2026-10-01T09:00:00Z", "orders": 0, "spend": "0.00",
                      "currency": "", "points": 0, "tier": None, "tags": [], "last_purchase_at": None}  # fmt: skip


def test_admins_see_contact_details_in_full_and_the_members_shown_are_audited(zhang):
    [no_phone] = members_create(1, {"name": "Li Na"})
    segment = segment_of("list", [zhang["member"], no_phone])

    body = page(Role.ADMIN, segment.key, "fields=phone,identifiers.phone,traits.city")
    page(Role.ADMIN, segment.key, "fields=orders,traits.city")  # nothing personal asked: nothing to audit
    page(Role.ADMIN, segment.key, "fields=name,orders")  # names are personal: audited

    assert [(m["phone"], m["identifiers.phone"]) for m in body["results"]] == [
        ("+8613800138000", ["+8613800138000"]),
        (None, []),
    ]
    contact, names = AuditEntry.objects.filter(action=AuditEntry.Action.VIEW_CONTACT_DETAILS).order_by("id")
    assert (contact.member_ids, contact.user.username, contact.channel, contact.personal_fields) == (
        [zhang["member"]], "staff-admin", "api", ["identifiers.phone", "phone"]
    )  # fmt: skip
    assert contact.detail == (
        f"/api/v1/segments/{segment.key}/members/?fields=phone,identifiers.phone,traits.city (withheld no_consent=0)"
    )
    assert (names.member_ids, names.personal_fields) == ([zhang["member"], no_phone], ["traits.name"])


def test_traits_phone_and_email_are_contact_details_too_and_a_number_is_masked_like_text():
    [member_id] = members_create(1, {"phone": 13800138000, "email": "li.na@example.com"})
    segment = segment_of("list", [member_id])

    [member] = page(Role.MARKETING, segment.key, "fields=traits.phone,traits.email")["results"]

    assert (member["traits.phone"], member["traits.email"]) == ("138****8000", "l***@example.com")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("fields=phone,shoe_size", ["shoe_size"]),
        ("fields=traits.,identifiers.Member-Card,points", ["traits.", "identifiers.Member-Card"]),
        ("fields=phone&fields=Phone", ["Phone"]),
        ("fields=extra.x", ["extra.x"]),
    ],
)
def test_an_unknown_field_is_a_400_naming_it(query, named):
    segment = segment_of("list", members_create(1))

    response = staff_client(Role.MARKETING).get(f"/api/v1/segments/{segment.key}/members/?{query}")

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "fields", "reason": f"unknown field: {n}"} for n in named]


def test_too_many_fields_is_a_400():
    segment = segment_of("list", members_create(1))
    many = ",".join(f"traits.t{n}" for n in range(65))

    response = staff_client(Role.MARKETING).get(f"/api/v1/segments/{segment.key}/members/?fields={many}")

    assert (response.status_code, response.json()["errors"][0]["reason"]) == (
        400,
        "at most 64 fields: 65 fields",
    )


def test_fields_are_given_in_the_order_asked_once_each_and_may_repeat():
    fields = fields_parse(["tier", " phone", "member_id", "phone", "traits.a", ""])
    segment = segment_of("list", members_create(1, {"a": 1}))

    body = page(Role.MARKETING, segment.key, "fields=tier,%20phone&fields=member_id,phone,traits.a")

    assert [f.name for f in fields] == ["tier", "phone", "traits.a"]
    assert body["results"][0] == {"member_id": body["results"][0]["member_id"], "entered_at": "2026-10-01T09:00:00Z",
                                  "tier": None, "phone": None, "traits.a": 1}  # fmt: skip
    assert list(body["results"][0]) == ["member_id", "entered_at", "tier", "phone", "traits.a"]


def test_a_page_is_one_query_whatever_its_size_and_fields():
    ids = members_create(40, {"name": "N", "city": "Shanghai"}, phone=lambda i: f"+86139001390{i:02d}")
    Identifier.objects.bulk_create(Identifier(type="member_card", value=f"MC-{m}", member_id=m) for m in ids)
    MemberAggregate.objects.bulk_create(MemberAggregate(member_id=m, currency="CNY", orders=1) for m in ids)
    PointsAccount.objects.bulk_create(PointsAccount(member_id=m, balance=5) for m in ids)
    tag = Tag.objects.create(key="t", name="T", kind="manual")
    MemberTag.objects.bulk_create(MemberTag(member_id=m, tag=tag) for m in ids)
    segment = segment_of("list", ids)
    masking = Masking(None, channel="api", detail="test")

    with CaptureQueriesContext(connection) as read:
        rows = segment_rows(segment=segment, fields=fields_parse(EVERYTHING.split(",")), after=0, size=40,
                            masking=masking, purposes=marketing_purposes(settings.CONSENT_PURPOSES))  # fmt: skip
    client, counts = staff_client(Role.ADMIN), []
    client.get(f"/api/v1/segments/{segment.key}/")  # the token, read once per process (cdp.staff_tokens)
    for size in (2, 40):
        with CaptureQueriesContext(connection) as request:
            response = client.get(
                f"/api/v1/segments/{segment.key}/members/?page_size={size}&fields={EVERYTHING}"
            )
        assert response.status_code == 200
        counts.append((len(request), sum("members_segmentmember" in q["sql"] for q in request)))

    assert len(read) == 1
    assert len(rows) == 40
    assert {r.values["member_card"] for r in rows} == {f"MC-{m}" for m in ids}
    # Besides authentication, the segment and the audit entry: the page, once.
    assert counts[0] == counts[1]
    assert counts[0][1] == 1


def test_pages_walk_members_present_throughout_exactly_once_as_others_come_and_go():
    ids = members_create(30, {"name": "N"})
    segment = segment_of("list", ids[:25])
    client, seen, cursor = staff_client(Role.MARKETING), [], 0

    while cursor is not None:
        body = client.get(
            f"/api/v1/segments/{segment.key}/members/?page_size=7&cursor={cursor}&fields=name"
        ).json()
        seen += [m["member_id"] for m in body["results"]]
        cursor = body["next_cursor"]
        if len(seen) == 7:  # meanwhile one seen member leaves, an unseen one leaves, a new one enters
            SegmentMember.objects.filter(segment=segment, member_id__in=[ids[0], ids[20]]).delete()
            SegmentMember.objects.create(segment=segment, member_id=ids[27], entered_at=T + timedelta(days=1))

    assert seen == [*ids[:20], *ids[21:25], ids[27]]


@given(st.lists(st.sampled_from(sorted(n for n in FIELDS if "<" not in n)), max_size=8))
def test_any_list_of_known_fields_parses_to_those_fields_in_order(names):
    fields = fields_parse(names)

    assert [f.name for f in fields] == [
        n for n in dict.fromkeys(names) if n not in ("member_id", "entered_at")
    ]
