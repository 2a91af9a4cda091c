"""The segments API for marketing tools: definitions, keyset member pages, the changes feed."""

import threading
import time

import pytest
from django.utils import timezone

from cdp.roles import Role
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.segments.models import Segment
from members.segments.services import segment_compute, segment_static_set
from tests.factories import EventFactory, SourceFactory
from tests.factories.consent import consent_grant
from tests.factories.members import MemberFactory
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def zhang(zhang: dict) -> dict:
    """Zhang Wei (``tests/members/conftest.py``), who consented to every purpose: marketing
    pulls give only members with consent (``tests/members/consent/test_outflows.py``)."""
    consent_grant([zhang["member"]])
    return zhang


@pytest.fixture
def buyers(zhang) -> Segment:
    segment = Segment.objects.create(key="buyers", name="Buyers", kind="dynamic",
                                     rule={"aggregate": "orders", "op": "gte", "value": 1})  # fmt: skip
    return segment_compute(segment=segment)


@pytest.mark.parametrize(("role", "expected"), [(None, 401), (Role.CRM_AGENT, 403), (Role.MARKETING, 200),
                                                (Role.CHECKOUT, 403), (Role.ADMIN, 200)])  # fmt: skip
def test_only_marketing_and_admins_read_segments(buyers, role, expected):
    assert staff_client(role).get("/api/v1/segments/buyers/").status_code == expected


def test_a_segment_says_its_size_and_when_it_was_computed(buyers, zhang):
    body = staff_client(Role.MARKETING).get("/api/v1/segments/").json()["results"]
    made = [s for s in body if not s["built_in"]]  # the built-in RFM and lifecycle segments are there too

    assert [(s["key"], s["size"], s["error"]) for s in made] == [("buyers", 1, "")]
    assert made[0]["computed_at"] is not None
    assert staff_client(Role.MARKETING).get("/api/v1/segments/nope/").status_code == 404


def test_members_come_in_stable_keyset_pages(zhang):
    others = [EventFactory(source=SourceFactory(), user_id=f"p{n}", event="Page Viewed") for n in range(4)]
    events_process_pending()
    ids = sorted([zhang["member"], *(EventResolution.objects.get(event=e).member_id for e in others)])
    consent_grant(set(ids) - {zhang["member"]})
    segment = segment_static_set(
        segment=Segment.objects.create(key="list", name="List", kind="static"), member_ids=ids
    )
    client, seen, cursor = staff_client(Role.MARKETING), [], None

    while True:
        page = client.get(
            f"/api/v1/segments/{segment.key}/members/?page_size=2" + (f"&cursor={cursor}" if cursor else "")
        ).json()
        seen += [r["member_id"] for r in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == ids
    bad = client.get(f"/api/v1/segments/{segment.key}/members/?page_size=0")
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "page_size")


def test_the_changes_feed_gives_who_entered_and_left_since_a_cursor(buyers, zhang):
    client = staff_client(Role.MARKETING)
    first = client.get("/api/v1/segments/buyers/changes/?since=0").json()
    buyers.rule = {"aggregate": "orders", "op": "gte", "value": 99}
    buyers.save()
    segment_compute(segment=buyers)

    later = client.get(f"/api/v1/segments/buyers/changes/?since={first['next_since']}").json()
    nothing = client.get(f"/api/v1/segments/buyers/changes/?since={later['next_since']}").json()

    assert [(c["member_id"], c["change"]) for c in first["results"]] == [(zhang["member"], "entered")]
    assert [(c["member_id"], c["change"]) for c in later["results"]] == [(zhang["member"], "exited")]
    assert nothing == {
        "results": [],
        "next_since": later["next_since"],
        "purpose": "marketing",
        "withheld": {"no_consent": 0},
    }


@pytest.mark.django_db(transaction=True)
def test_the_changes_feed_never_lets_a_late_commit_fall_behind_the_cursor():
    from django.db import connection, transaction

    from members.segments.models import SegmentChange

    listed = Segment.objects.create(key="list", name="List", kind="static")
    early, late = (m.pk for m in MemberFactory.create_batch(2))
    consent_grant([early, late])
    wrote, finish, pages = threading.Event(), threading.Event(), []

    def late_writer() -> None:  # takes the lower id first, commits last
        try:
            with transaction.atomic():
                SegmentChange.objects.create(
                    segment=listed, member_id=late, change="entered", at=timezone.now()
                )
                wrote.set()
                finish.wait(10)
        finally:
            connection.close()

    def reader() -> None:
        try:
            pages.append(staff_client(Role.MARKETING).get("/api/v1/segments/list/changes/?since=0").json())
        finally:
            connection.close()

    writer = threading.Thread(target=late_writer)
    writer.start()
    assert wrote.wait(10)
    SegmentChange.objects.create(segment=listed, member_id=early, change="entered", at=timezone.now())
    reading = threading.Thread(target=reader)
    reading.start()
    time.sleep(0.3)
    finish.set()
    writer.join(10)
    reading.join(10)
    after = staff_client(Role.MARKETING).get("/api/v1/segments/list/changes/?since=0").json()

    # The reader waited for the late writer rather than hand out the higher cursor alone.
    assert [r["member_id"] for r in pages[0]["results"]] == [late, early]
    assert [r["member_id"] for r in after["results"]] == [late, early]


LIST_ENDPOINTS = [
    "/api/v1/sources/", "/api/v1/rejected-events/", "/api/v1/members/?q=zhang", "/api/v1/members/{id}/events/",
    "/api/v1/members/{id}/tags/", "/api/v1/members/{id}/tags/history/", "/api/v1/segments/",
    "/api/v1/segments/buyers/members/", "/api/v1/segments/buyers/webhooks/", "/api/v1/tags/", "/api/v1/campaigns/",
    "/api/v1/points/expiring/", "/api/v1/members/{id}/consent/history/",
]  # fmt: skip
#: What a list says of itself besides its page: a segment's members page, the purpose it was read
#: for and how many members it left out (consent).
PAGE_NOTES = {"/api/v1/segments/buyers/members/": {"purpose", "withheld"}}


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_every_list_endpoint_answers_results_and_a_cursor(zhang, buyers, path):
    separator = "&" if "?" in path else "?"
    body = staff_client(Role.ADMIN).get(f"{path.format(id=zhang['member'])}{separator}page_size=1").json()

    assert set(body) == {"results", "next_cursor", *PAGE_NOTES.get(path, ())}
    assert isinstance(body["results"], list)


@pytest.mark.parametrize(("path", "key"), [("/api/v1/segments/", "key"), ("/api/v1/tags/", "key")])
def test_a_list_pages_to_its_end_by_the_cursor(buyers, path, key):
    client, seen, cursor = staff_client(Role.ADMIN), [], None
    while True:
        body = client.get(path, {"page_size": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [item[key] for item in body["results"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert len(seen) > 2  # several pages (the built-in segments and computed tags are there)
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
