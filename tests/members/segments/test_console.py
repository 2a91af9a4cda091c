"""The console's segment and tag pages and the member page's tags card (server-rendered), with
the Django test client: who sees what, forms that work, the rule's errors shown by path."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from cdp.roles import Role
from cdp.services import staff_user_ensure
from members.segments.definitions.manual_tags import member_tag_add
from members.segments.definitions.segments import segment_create
from members.segments.definitions.tags import tag_create
from members.segments.models import MemberTag, Segment, SegmentMember, Tag, TagChange
from members.segments.services import segment_compute
from tests.members.test_console import console_client

pytestmark = pytest.mark.django_db

BUYERS = {"aggregate": "orders", "op": "gte", "value": 1}


@pytest.fixture
def buyers(zhang) -> Segment:
    return segment_compute(segment=segment_create(key="buyers", name="Buyers", kind="dynamic", rule=BUYERS))


def page(response) -> str:
    return response.content.decode()


@pytest.mark.parametrize(
    ("role", "segments", "tags"),
    [
        (Role.MARKETING, 200, 200),
        (Role.CRM_AGENT, 403, 200),
        (Role.CHECKOUT, 403, 403),
        (Role.ADMIN, 200, 200),
    ],
)
def test_the_pages_open_for_the_right_roles(buyers, role, segments, tags):
    client = console_client(role)

    assert client.get("/console/segments/").status_code == segments
    assert client.get("/console/segments/buyers/").status_code == segments
    assert client.get("/console/tags/").status_code == tags


def test_the_nav_links_follow_the_role(buyers):
    marketing = page(console_client(Role.MARKETING).get("/console/segments/"))
    agent = page(console_client(Role.CRM_AGENT).get("/console/tags/"))

    assert 'href="/console/segments/">Segments' in marketing
    assert 'href="/console/tags/">Tags' in marketing
    assert "Search members" not in marketing  # marketing does not reach members
    assert 'href="/console/segments/">Segments' not in agent
    assert "Search members" in agent


def test_the_segments_page_lists_kind_size_time_error_and_built_ins(buyers):
    Segment.objects.create(key="x-lost", name="Lost", kind="dynamic", rule=BUYERS, built_in=True,
                           error="canceling statement due to statement timeout")  # fmt: skip

    text = page(console_client(Role.MARKETING).get("/console/segments/"))

    assert "Buyers" in text
    assert "built in" in text
    assert "statement timeout" in text
    assert f"{buyers.compute_ms} ms" in text
    assert "<td>1</td>" in text  # the size


def test_a_segment_page_shows_definition_history_members_and_permitted_buttons(zhang, buyers):
    marketing = page(console_client(Role.MARKETING).get("/console/segments/buyers/"))
    admin = page(console_client(Role.ADMIN).get("/console/segments/buyers/"))

    assert "&quot;aggregate&quot;: &quot;orders&quot;" in marketing
    assert f"#{zhang['member']}" in marketing
    assert "entered" in marketing
    assert f'href="/console/members/{zhang["member"]}/"' not in marketing  # marketing opens no member
    assert f'href="/console/members/{zhang["member"]}/"' in admin
    assert all(button in marketing for button in ("Edit", "Copy", "Delete"))
    assert "Upload the list" not in marketing  # a dynamic segment


def test_a_built_in_segment_offers_a_copy_only(zhang):
    Segment.objects.create(key="x-lost", name="Lost", kind="dynamic", rule=BUYERS, built_in=True)
    client = console_client(Role.MARKETING)

    text = page(client.get("/console/segments/x-lost/"))
    edit = client.get("/console/segments/x-lost/edit/")
    copied = client.post("/console/segments/x-lost/copy/", {"key": "my-lost", "name": ""})

    assert "copy it to change it" in text
    assert "/console/segments/x-lost/edit/" not in text
    assert 'class="danger"' not in text
    assert edit.status_code == 302
    assert copied.status_code == 302
    assert copied["Location"] == "/console/segments/my-lost/"
    copy = Segment.objects.get(key="my-lost")
    assert (copy.name, copy.built_in, copy.rule) == ("Lost (copy)", False, BUYERS)


def test_a_segment_is_created_with_the_form(zhang):
    client = console_client(Role.MARKETING)

    response = client.post("/console/new-segment/", {"key": "gold-sh", "name": "Gold in Shanghai", "kind": "dynamic",
                                                      "rule": '{"trait": "city", "op": "eq", "value": "Shanghai"}'})  # fmt: skip

    assert response.status_code == 302
    assert Segment.objects.get(key="gold-sh").rule == {"trait": "city", "op": "eq", "value": "Shanghai"}
    assert "created" in page(client.get(response["Location"]))


def test_the_form_shows_the_rule_errors_by_path(zhang):
    client = console_client(Role.MARKETING)
    rule = (
        '{"all": [{"trait": "city", "op": "exists"}, {"trait": "a", "op": "gtt", "value": 1}, {"event": ""}]}'
    )
    unknown = '{"any": [{"trait": "city", "op": "exists"}, {"segment": "nope"}]}'

    def create(rule: str):
        return client.post(
            "/console/new-segment/", {"key": "s", "name": "S", "kind": "dynamic", "rule": rule}
        )

    bad, reads, not_json = create(rule), create(unknown), create("{all: []}")

    text = page(bad)
    assert bad.status_code == 200
    assert 'data-testid="rule-errors"' in text
    assert "The rule has 2 problems" in text
    assert "<code>all[1].op</code>: unknown operator" in text
    assert "<code>all[2].event</code>: expected an event name" in text
    assert "<code>any[1].segment</code>: no segment" in page(reads)
    assert "not JSON" in page(not_json)
    assert not Segment.objects.filter(key="s").exists()


def test_a_segment_is_edited_and_a_cycle_is_shown(zhang, buyers):
    segment_create(key="big", name="Big", kind="dynamic", rule={"segment": "buyers"})
    client = console_client(Role.MARKETING)

    form = page(client.get("/console/segments/buyers/edit/"))
    cycle = client.post("/console/segments/buyers/edit/", {"name": "Buyers", "rule": '{"segment": "big"}'})
    saved = client.post("/console/segments/buyers/edit/", {"name": "Repeat buyers", "description": "2+",
                                                           "rule": '{"aggregate": "orders", "op": "gte", "value": 2}'})  # fmt: skip

    assert "&quot;orders&quot;" in form
    assert "reads back the segment itself" in page(cycle)
    assert saved.status_code == 302
    buyers.refresh_from_db()
    assert (buyers.name, buyers.key, buyers.rule["value"]) == ("Repeat buyers", "buyers", 2)


def test_deleting_a_segment_a_rule_reads_says_who_reads_it(zhang, buyers):
    segment_create(key="big", name="Big", kind="dynamic", rule={"segment": "buyers"})
    client = console_client(Role.MARKETING)

    refused = client.post("/console/segments/buyers/delete/", follow=True)
    client.post("/console/segments/big/delete/")
    deleted = client.post("/console/segments/buyers/delete/")

    assert "read by segment &#x27;big&#x27;" in page(refused)
    assert deleted["Location"] == "/console/segments/"
    assert not Segment.objects.filter(built_in=False).exists()


def test_a_static_list_is_uploaded_and_its_problems_shown(zhang):
    segment_create(key="vip", name="VIP", kind="static")
    client = console_client(Role.MARKETING)
    upload = SimpleUploadedFile(
        "vip.csv", b"phone\n138 0013 8000\n13900139000\nnope\n", content_type="text/csv"
    )

    text = page(client.post("/console/segments/vip/members/", {"file": upload}))
    empty = client.post(
        "/console/segments/vip/members/", {"file": SimpleUploadedFile("e.csv", b"138 0013 8000\n")}
    )

    assert "3 rows: 1 matched, 1 found nobody, 1 not valid" in text
    assert "no member holds this phone" in text
    assert set(SegmentMember.objects.values_list("member_id", flat=True)) == {zhang["member"]}
    assert empty.status_code == 400
    assert "expected the header" in page(empty)


def test_tags_are_created_and_edited_by_marketing_only(zhang):
    Tag.objects.create(key="x-lost", name="Lost", kind="computed")
    marketing, agent = console_client(Role.MARKETING), console_client(Role.CRM_AGENT)

    created = marketing.post("/console/tags/", {"key": "vip", "name": "VIP", "kind": "manual"})
    bad = marketing.post(
        "/console/tags/", {"key": "big", "name": "Big", "kind": "rule", "rule": '{"aggregate": "x"}'}
    )
    edited = marketing.post("/console/tags/vip/", {"name": "Very important", "description": "hand-picked"})
    computed = page(marketing.get("/console/tags/x-lost/"))

    assert created.status_code == 302
    assert "<code>aggregate</code>: unknown aggregate" in page(bad)
    assert edited.status_code == 302
    assert Tag.objects.get(key="vip").name == "Very important"
    assert "read-only" in computed
    assert 'data-testid="tag-form"' not in computed
    assert 'data-testid="tag-form"' not in page(agent.get("/console/tags/"))
    assert agent.post("/console/tags/", {"key": "x", "name": "X", "kind": "manual"}).status_code == 403
    assert agent.post("/console/tags/vip/delete/").status_code == 403
    assert marketing.post("/console/tags/vip/delete/").status_code == 302
    assert not Tag.objects.filter(key="vip").exists()


def test_the_member_page_shows_tags_and_segments_and_adds_and_removes_manual_tags(zhang, buyers):
    tag_create(key="vip", name="VIP", kind="manual")
    tag_create(key="gift", name="Gift sent", kind="manual")
    client = console_client(Role.CRM_AGENT)
    url = f"/console/members/{zhang['member']}/"

    added = client.post(f"{url}tags/", {"tag": "vip"})
    text = page(client.get(url))
    removed = client.post(f"{url}tags/vip/remove/")
    rule = client.post(f"{url}tags/nope/remove/")

    assert added["Location"] == url
    assert "VIP" in text
    assert "added by console-crm_agent" in text
    assert f'action="{url}tags/vip/remove/"' in text
    assert '<option value="gift">Gift sent</option>' in text
    assert '<option value="vip">' not in text  # the member has it already
    assert "Buyers" in text  # a segment the member is in
    assert removed.status_code == 302
    assert rule.status_code == 404
    assert list(TagChange.objects.filter(tag__key="vip").order_by("id").values_list("action", "by__username")) == [
        ("added", "console-crm_agent"), ("removed", "console-crm_agent"),
    ]  # fmt: skip


def test_an_absorbed_id_tags_its_survivor_and_rule_tags_stay(zhang):
    tag_create(key="vip", name="VIP", kind="manual")
    tag_create(key="buyer", name="Buyer", kind="rule", rule=BUYERS)
    client = console_client(Role.CRM_MANAGER)

    absorbed = client.post(f"/console/members/{zhang['absorbed']}/tags/", {"tag": "vip"})
    refused = client.post(f"/console/members/{zhang['member']}/tags/", {"tag": "buyer"}, follow=True)

    assert absorbed["Location"] == f"/console/members/{zhang['member']}/"
    assert list(MemberTag.objects.filter(tag__key="vip").values_list("member_id", "tag__key")) == [
        (zhang["member"], "vip")
    ]
    assert "not by hand" in page(refused)


def test_marketing_may_not_tag_members(zhang):
    tag = tag_create(key="vip", name="VIP", kind="manual")
    member_tag_add(
        member_id=zhang["member"], tag=tag, by=staff_user_ensure(username="agent", role=Role.CRM_AGENT)
    )
    client = console_client(Role.MARKETING)

    assert client.post(f"/console/members/{zhang['member']}/tags/", {"tag": "vip"}).status_code == 403
    assert client.post(f"/console/members/{zhang['member']}/tags/vip/remove/").status_code == 403
