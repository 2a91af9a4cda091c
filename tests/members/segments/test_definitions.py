"""Defining segments and tags through the API (and the services behind it): rule errors by path,
built-in segments copied not changed, reference cycles and deletes of what rules read refused,
static lists from ids or CSV of any identifier type, manual tags recorded and idempotent, and
the full recompute after a rule is created or edited."""

import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from kombu.exceptions import OperationalError

from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.marks import members_refresh_enqueue
from members.models import DirtyMark
from members.segments.definitions import static_lists
from members.segments.definitions.manual_tags import member_tag_add, member_tag_remove
from members.segments.definitions.segments import segment_create, segment_update
from members.segments.definitions.tags import tag_create
from members.segments.definitions.writes import DefinitionRefused
from members.segments.models import MemberTag, Segment, SegmentChange, SegmentMember, Tag, TagChange
from tests.factories import EventFactory, SourceFactory
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db

BUYERS = {"aggregate": "orders", "op": "gte", "value": 1}


def members_of(key: str) -> set[int]:
    return set(SegmentMember.objects.filter(segment__key=key).values_list("member_id", flat=True))


def fields_of(response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


@pytest.fixture
def marketing():
    return staff_client(Role.MARKETING)


@pytest.fixture
def wang(db) -> int:
    """A second member: an email and a member card, no orders."""
    event = EventFactory.create(source=SourceFactory(kind="app"), type="identify", user_id="wang-1", anonymous_id="",
                         traits={"email": "wang@example.com", "name": "Wang Fang"},
                         context={"externalIds": [{"id": "MC-0077", "type": "member_card"}]})  # fmt: skip
    events_process_pending()
    return EventResolution.objects.get(event=event).member_id


# --- segments: create, validate, edit ---------------------------------------------------------


def test_marketing_creates_a_dynamic_segment_computed_after_the_commit(
    zhang, marketing, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = marketing.post(
            "/api/v1/segments/",
            {"key": "buyers", "name": "Buyers", "kind": "dynamic", "rule": BUYERS},
            format="json",
        )

    assert response.status_code == 201, response.content
    assert response.json()["rule"] == BUYERS
    segment = Segment.objects.get(key="buyers")
    assert (segment.size, segment.error) == (1, "")
    assert members_of("buyers") == {zhang["member"]}


def test_the_recompute_is_sent_only_once_committed_and_only_when_the_rule_changed(
    zhang, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        "members.segments.tasks.segment_recompute.apply_async", lambda args, **kw: sent.append(args)
    )

    with django_capture_on_commit_callbacks() as callbacks:
        segment = segment_create(key="buyers", name="Buyers", kind="dynamic", rule=BUYERS)
    assert sent == []  # not before the commit
    for callback in callbacks:
        callback()
    with django_capture_on_commit_callbacks(execute=True):
        segment_update(segment=segment, name="People who bought", rule=BUYERS)
    with django_capture_on_commit_callbacks(execute=True):
        segment_update(segment=segment, rule={"aggregate": "orders", "op": "gte", "value": 2})

    assert sent == [(segment.pk,), (segment.pk,)]
    assert Segment.objects.get(pk=segment.pk).name == "People who bought"


def test_a_lost_broker_does_not_undo_the_edit(zhang, django_capture_on_commit_callbacks, monkeypatch):
    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("members.segments.tasks.segment_recompute.apply_async", broker_down)

    with django_capture_on_commit_callbacks(execute=True):
        segment = segment_create(key="buyers", name="Buyers", kind="dynamic", rule=BUYERS)

    assert Segment.objects.filter(pk=segment.pk).exists()  # the nightly recompute will compute it


def test_every_problem_of_a_rule_comes_back_by_path(marketing):
    rule = {"all": [{"trait": "city", "op": "eq", "value": "Shanghai"}, {"trait": "age", "op": "gtt", "value": 3},
                    {"event": "Order Completed", "in_last_days": -1}]}  # fmt: skip

    response = marketing.post("/api/v1/segments/", {"key": "s", "name": "S", "kind": "dynamic", "rule": rule},
                              format="json")  # fmt: skip

    assert response.status_code == 400
    assert fields_of(response) == ["rule.all[1].op", "rule.all[2].in_last_days"]
    assert "unknown operator 'gtt'" in response.json()["errors"][0]["reason"]
    assert not Segment.objects.filter(built_in=False).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "s", "name": "S", "kind": "dynamic"}, "rule"),
        ({"key": "s", "name": "S", "kind": "static", "rule": BUYERS}, "rule"),
        ({"key": "s", "name": "S", "kind": "smart", "rule": BUYERS}, "kind"),
        ({"key": "no spaces", "name": "S", "kind": "static"}, "key"),
        ({"key": "s", "kind": "static"}, "name"),
        ({"key": "s", "name": "S", "kind": "dynamic", "rule": {"segment": "nope"}}, "rule.segment"),
        ({"key": "s", "name": "S", "kind": "dynamic", "rule": {"not": {"tag": "nope"}}}, "rule.not.tag"),
        ({"key": "s", "name": "S", "kind": "dynamic", "rule": {"segment": "s"}}, "rule.segment"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(marketing, body, field):
    response = marketing.post("/api/v1/segments/", body, format="json")

    assert (response.status_code, fields_of(response)) == (400, [field]), response.content
    assert set(response.json()) == {"code", "message", "errors"}


def test_a_taken_key_is_a_conflict_and_keys_and_kinds_never_change(marketing):
    segment_create(key="vip", name="VIP", kind="static")

    taken = marketing.post("/api/v1/segments/", {"key": "vip", "name": "x", "kind": "static"}, format="json")
    rekey = marketing.patch("/api/v1/segments/vip/", {"key": "vip2", "kind": "dynamic"}, format="json")
    renamed = marketing.patch(
        "/api/v1/segments/vip/", {"key": "vip", "name": "Very important"}, format="json"
    )

    assert (taken.status_code, fields_of(taken)) == (409, ["key"])
    assert (rekey.status_code, fields_of(rekey)) == (400, ["key", "kind"])
    assert (renamed.status_code, renamed.json()["name"]) == (200, "Very important")
    assert marketing.patch("/api/v1/segments/nope/", {"name": "x"}, format="json").status_code == 404


def test_a_rule_that_reads_itself_back_is_refused_through_tags_and_segments(marketing):
    segment_create(key="a", name="A", kind="dynamic", rule=BUYERS)
    segment_create(key="b", name="B", kind="dynamic", rule={"segment": "a"})
    tag_create(key="in-b", name="In B", kind="rule", rule={"segment": "b"})

    direct = marketing.patch("/api/v1/segments/a/", {"rule": {"segment": "b"}}, format="json")
    via_tag = marketing.patch(
        "/api/v1/segments/a/", {"rule": {"any": [BUYERS, {"tag": "in-b"}]}}, format="json"
    )

    assert (direct.status_code, fields_of(direct)) == (400, ["rule.segment"])
    assert "segment 'a' → segment 'b' → segment 'a'" in direct.json()["errors"][0]["reason"]
    assert (via_tag.status_code, fields_of(via_tag)) == (400, ["rule.any[1].tag"])
    assert "tag 'in-b' → segment 'b' → segment 'a'" in via_tag.json()["errors"][0]["reason"]
    assert Segment.objects.get(key="a").rule == BUYERS


def test_a_segment_a_rule_reads_cannot_be_deleted(zhang, marketing):
    segment_create(key="buyers", name="Buyers", kind="dynamic", rule=BUYERS)
    segment_create(
        key="big-buyers", name="Big", kind="dynamic", rule={"all": [{"segment": "buyers"}, BUYERS]}
    )
    tag_create(key="buyer", name="Buyer", kind="rule", rule={"segment": "buyers"})

    refused = marketing.delete("/api/v1/segments/buyers/")
    marketing.delete("/api/v1/segments/big-buyers/")
    marketing.delete("/api/v1/tags/buyer/")
    deleted = marketing.delete("/api/v1/segments/buyers/")

    assert refused.status_code == 409
    assert "segment 'big-buyers'" in refused.json()["message"]
    assert "tag 'buyer'" in refused.json()["message"]
    assert deleted.status_code == 204
    assert not Segment.objects.filter(built_in=False).exists()
    assert not SegmentChange.objects.filter(segment__key="buyers").exists()


# --- built-in segments -------------------------------------------------------------------------


def test_a_built_in_segment_is_copied_not_changed(zhang, marketing, django_capture_on_commit_callbacks):
    Segment.objects.create(key="x-champions", name="Champions", kind="dynamic", rule=BUYERS, built_in=True)

    edit = marketing.patch("/api/v1/segments/x-champions/", {"name": "Mine"}, format="json")
    delete = marketing.delete("/api/v1/segments/x-champions/")
    with django_capture_on_commit_callbacks(execute=True):
        copy = marketing.post("/api/v1/segments/x-champions/copy/", {"key": "my-champions"}, format="json")
    edited = marketing.patch("/api/v1/segments/my-champions/",
                             {"rule": {"aggregate": "orders", "op": "gte", "value": 9}}, format="json")  # fmt: skip

    assert (edit.status_code, delete.status_code) == (409, 409)
    assert "copy it" in edit.json()["message"]
    assert copy.status_code == 201
    assert (copy.json()["name"], copy.json()["built_in"], copy.json()["rule"]) == (
        "Champions (copy)",
        False,
        BUYERS,
    )
    assert Segment.objects.get(key="my-champions").size == 1  # computed after the commit
    assert edited.status_code == 200
    assert Segment.objects.get(key="x-champions").name == "Champions"


def test_copying_a_static_list_copies_its_members(zhang, marketing):
    static_lists.segment_members_set(segment=segment_create(key="vip", name="VIP", kind="static"),
                                    member_ids=[zhang["member"]])  # fmt: skip

    response = marketing.post("/api/v1/segments/vip/copy/", {"key": "vip-2", "name": "VIP 2"}, format="json")
    again = marketing.post("/api/v1/segments/vip/copy/", {"key": "vip-2"}, format="json")

    assert (response.status_code, response.json()["size"]) == (201, 1)
    assert members_of("vip-2") == {zhang["member"]}
    assert again.status_code == 409


# --- static lists ------------------------------------------------------------------------------


@pytest.fixture
def vip(db) -> Segment:
    return segment_create(key="vip", name="VIP", kind="static")


def test_a_static_list_from_member_ids_counts_an_absorbed_id_as_its_survivor(zhang, wang, vip, marketing):
    response = marketing.put("/api/v1/segments/vip/members/",
                             {"member_ids": [zhang["absorbed"], wang, 999_999_999]}, format="json")  # fmt: skip

    body = response.json()
    assert response.status_code == 200, body
    assert (body["rows"], body["matched"], body["unmatched"], body["invalid"]) == (3, 2, 1, 0)
    assert body["problems"] == [{"line": 3, "value": "999999999", "reason": "no such member"}]
    assert body["segment"]["size"] == 2
    assert members_of("vip") == {zhang["member"], wang}


def test_a_csv_of_phones_in_any_written_form(zhang, vip, marketing):
    csv = "phone\n138 0013 8000\n+86 138-0013-8000\n13900139000\nnot a phone\n\n0\n"

    body = marketing.put("/api/v1/segments/vip/members/", csv.encode(), content_type="text/csv").json()

    assert (body["rows"], body["matched"], body["unmatched"], body["invalid"]) == (5, 2, 1, 2)
    assert [(p["line"], p["reason"].split(":")[0]) for p in body["problems"]] == [
        (4, "no member holds this phone"),
        (5, "not a valid phone"),
        (7, "not a valid phone"),  # a placeholder value
    ]
    assert members_of("vip") == {zhang["member"]}


def test_a_csv_of_typed_rows_uploaded_as_a_file(zhang, wang, vip, marketing):
    csv = (
        "\ufefftype,value\r\n"  # a spreadsheet's byte order mark and line breaks
        "email, Zhang.Wei@Example.COM \r\n"
        "member_card,MC-0077\r\n"
        "member_id,999999999\r\n"
        "loyalty_no,L-1\r\n"  # any custom type: valid, nobody holds it
        "Phone,not-a-phone\r\n"
        "email\r\n"
        "member_id,abc\r\n"
    )
    upload = SimpleUploadedFile("list.csv", csv.encode(), content_type="text/csv")

    response = marketing.put("/api/v1/segments/vip/members/", {"file": upload}, format="multipart")

    body = response.json()
    assert response.status_code == 200, body
    assert (body["rows"], body["matched"], body["unmatched"], body["invalid"]) == (7, 2, 2, 3)
    assert {p["line"]: p["reason"].split(" (")[0] for p in body["problems"]} == {
        4: "no member holds this member id",
        5: "no member holds this loyalty no",
        6: "not a valid phone: not a phone number",
        7: "expected 2 column(s), got 1",
        8: "a member id is a whole number",
    }
    assert members_of("vip") == {zhang["member"], wang}


def test_a_large_csv_is_looked_up_in_batches(
    zhang, wang, vip, marketing, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(static_lists, "LOOKUP_BATCH", 100)
    rows = [f"+86 139{n:08d}" for n in range(950)] + ["13800138000"]
    csv = "phone\n" + "\n".join(rows) + "\n"

    with django_assert_max_num_queries(40):  # 10 batches of one lookup each, and the write
        body = marketing.put("/api/v1/segments/vip/members/", csv.encode(), content_type="text/csv").json()

    assert (body["rows"], body["matched"], body["unmatched"]) == (951, 1, 950)
    assert len(body["problems"]) == static_lists.PROBLEMS_SHOWN
    assert members_of("vip") == {zhang["member"]}


@pytest.mark.parametrize(
    ("csv", "reason"),
    [
        (b"", "expected a header line"),
        (b"13800138000\n13900139000\n", "line 1: expected the header type,value"),
        (b"phone\nnot a phone\n0\n", "line 2: not a valid phone"),
        (b"phone\n\xff\xfe1\n", "line 2: not UTF-8"),
        (b'type,value\nphone,"1380013\x00"\n', "line 2:"),
    ],
)
def test_an_unusable_file_is_refused_and_the_list_kept(zhang, vip, marketing, csv, reason):
    static_lists.segment_members_set(segment=vip, member_ids=[zhang["member"]])

    response = marketing.put("/api/v1/segments/vip/members/", csv, content_type="text/csv")

    assert response.status_code == 400, response.content
    assert fields_of(response)[0] == "file"
    assert response.json()["errors"][0]["reason"].startswith(reason)
    assert members_of("vip") == {zhang["member"]}


def test_a_dynamic_or_built_in_segment_takes_no_list(zhang, marketing):
    segment_create(key="buyers", name="Buyers", kind="dynamic", rule=BUYERS)
    Segment.objects.create(key="frozen", name="Frozen", kind="static", built_in=True)

    dynamic = marketing.put(
        "/api/v1/segments/buyers/members/", {"member_ids": [zhang["member"]]}, format="json"
    )
    built_in = marketing.put(
        "/api/v1/segments/frozen/members/", {"member_ids": [zhang["member"]]}, format="json"
    )
    nothing = marketing.put("/api/v1/segments/frozen/members/", {}, format="json")

    assert (dynamic.status_code, built_in.status_code, nothing.status_code) == (409, 409, 400)
    assert members_of("buyers") == set()


# --- tags ---------------------------------------------------------------------------------------


def test_marketing_creates_rule_tags_computed_after_the_commit(
    zhang, marketing, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = marketing.post("/api/v1/tags/", {"key": "buyer", "name": "Buyer", "kind": "rule", "rule": BUYERS},
                                  format="json")  # fmt: skip

    assert response.status_code == 201, response.content
    assert set(MemberTag.objects.filter(tag__key="buyer").values_list("member_id", flat=True)) == {
        zhang["member"]
    }
    assert "buyer" in [t["key"] for t in marketing.get("/api/v1/tags/").json()["results"]]
    assert marketing.get("/api/v1/tags/buyer/").json()["rule"] == BUYERS


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"key": "t", "name": "T", "kind": "computed"}, 400, "kind"),
        ({"key": "t", "name": "T", "kind": "rule"}, 400, "rule"),
        ({"key": "t", "name": "T", "kind": "rule", "rule": {"trait": "x"}}, 400, "rule.op"),
        ({"key": "t", "name": "T", "kind": "manual", "rule": BUYERS}, 400, "rule"),
        ({"key": "history", "name": "T", "kind": "manual"}, 400, "key"),
    ],
)
def test_bad_tags_are_refused(marketing, body, status, field):
    response = marketing.post("/api/v1/tags/", body, format="json")

    assert (response.status_code, fields_of(response)) == (status, [field]), response.content


def test_computed_tags_are_read_only_and_tags_rules_read_stay(marketing):
    Tag.objects.create(key="x-champions", name="Champions", kind="computed")
    tag_create(key="vip", name="VIP", kind="manual")
    segment_create(key="vips", name="VIPs", kind="dynamic", rule={"tag": "vip"})

    edit = marketing.patch("/api/v1/tags/x-champions/", {"name": "Mine"}, format="json")
    delete = marketing.delete("/api/v1/tags/x-champions/")
    read = marketing.delete("/api/v1/tags/vip/")
    renamed = marketing.patch("/api/v1/tags/vip/", {"name": "Very important", "description": "hand-picked"},
                              format="json")  # fmt: skip
    ruled = marketing.patch("/api/v1/tags/vip/", {"rule": BUYERS}, format="json")

    assert (edit.status_code, delete.status_code) == (409, 409)
    assert (read.status_code, "segment 'vips'" in read.json()["message"]) == (409, True)
    assert (renamed.status_code, renamed.json()["description"]) == (200, "hand-picked")
    assert (ruled.status_code, fields_of(ruled)) == (400, ["rule"])


# --- manual tags ------------------------------------------------------------------------------


def test_staff_add_and_remove_manual_tags_recorded_and_idempotent(zhang):
    tag_create(key="vip", name="VIP", kind="manual")
    agent = staff_client(Role.CRM_AGENT)
    url = f"/api/v1/members/{zhang['member']}/tags/"

    added = agent.post(url, {"tag": "vip"}, format="json")
    again = agent.post(url, {"tag": "vip"}, format="json")
    listed = agent.get(url).json()["results"]
    removed = agent.delete(f"{url}vip/")
    gone = agent.delete(f"{url}vip/")

    assert (added.status_code, added.json()["changed"]) == (201, True)
    assert (again.status_code, again.json()["changed"]) == (200, False)
    assert [(t["key"], t["kind"], t["added_by"]) for t in listed if t["kind"] != "computed"] == [
        ("vip", "manual", "staff-crm_agent")
    ]
    assert (removed.status_code, removed.json()["changed"]) == (200, True)
    assert (gone.status_code, gone.json()["changed"]) == (200, False)
    assert list(
        TagChange.objects.filter(tag__key="vip").order_by("id").values_list("action", "by__username")
    ) == [
        ("added", "staff-crm_agent"),
        ("removed", "staff-crm_agent"),
    ]
    assert not MemberTag.objects.filter(tag__key="vip").exists()


def test_a_manual_tag_on_an_absorbed_id_lands_on_its_survivor(zhang, django_capture_on_commit_callbacks):
    vip = tag_create(key="vip", name="VIP", kind="manual")
    user = staff_user_ensure(username="manager", role=Role.CRM_MANAGER)

    with django_capture_on_commit_callbacks(execute=True):
        outcome = member_tag_add(member_id=zhang["absorbed"], tag=vip, by=user)

    assert (outcome.member_id, outcome.changed) == (zhang["member"], True)
    assert list(MemberTag.objects.filter(tag__key="vip").values_list("member_id", "added_by__username")) == [
        (zhang["member"], "manager")
    ]


def test_a_manual_tag_change_marks_the_member_for_a_refresh(zhang, django_capture_on_commit_callbacks):
    vip = tag_create(key="vip", name="VIP", kind="manual")
    user = staff_user_ensure(username="manager", role=Role.CRM_MANAGER)
    DirtyMark.objects.all().delete()

    with django_capture_on_commit_callbacks() as added:
        member_tag_add(member_id=zhang["member"], tag=vip, by=user)
    with django_capture_on_commit_callbacks() as again:
        member_tag_add(member_id=zhang["member"], tag=vip, by=user)

    # rule tags and segments may read the manual tag: the refresh evaluates them again
    assert list(DirtyMark.objects.values_list("member_id", flat=True)) == [zhang["member"]]
    assert added == [members_refresh_enqueue]
    assert again == []


def test_rule_and_computed_tags_are_not_added_by_hand(zhang):
    tag_create(key="buyer", name="Buyer", kind="rule", rule=BUYERS)
    agent = staff_client(Role.CRM_AGENT)

    rule = agent.post(f"/api/v1/members/{zhang['member']}/tags/", {"tag": "buyer"}, format="json")
    remove = agent.delete(f"/api/v1/members/{zhang['member']}/tags/buyer/")
    unknown = agent.post(f"/api/v1/members/{zhang['member']}/tags/", {"tag": "nope"}, format="json")
    nobody = agent.post("/api/v1/members/999999999/tags/", {"tag": "buyer"}, format="json")

    assert (rule.status_code, fields_of(rule)) == (409, ["tag"])
    assert remove.status_code == 409
    assert (unknown.status_code, fields_of(unknown)) == (400, ["tag"])
    assert nobody.status_code == 404
    assert not TagChange.objects.filter(by__isnull=False).exists()


def test_the_tag_history_pages_newest_first_and_includes_absorbed_ids(zhang):
    vip = tag_create(key="vip", name="VIP", kind="manual")
    user = staff_user_ensure(username="manager", role=Role.CRM_MANAGER)
    TagChange.objects.create(member_id=zhang["absorbed"], tag=vip, action="added", by=user)
    for _ in range(2):
        member_tag_add(member_id=zhang["member"], tag=vip, by=user)
        member_tag_remove(member_id=zhang["member"], tag=vip, by=user)
    client = staff_client(Role.CRM_AGENT)

    first = client.get(f"/api/v1/members/{zhang['absorbed']}/tags/history/?page_size=3").json()
    rest = client.get(f"/api/v1/members/{zhang['member']}/tags/history/?before={first['next_cursor']}").json()

    assert [c["action"] for c in first["results"]] == ["removed", "added", "removed"]
    assert [(c["action"], c["member_id"]) for c in rest["results"] if c["tag"] == "vip"] == [
        ("added", zhang["member"]), ("added", zhang["absorbed"]),
    ]  # fmt: skip
    assert rest["next_cursor"] is None
    assert first["results"][0]["by"] == "manager"


def test_the_360_view_shows_tags_and_segments(zhang, django_capture_on_commit_callbacks):
    vip = tag_create(key="vip", name="VIP", kind="manual")
    member_tag_add(
        member_id=zhang["member"], tag=vip, by=staff_user_ensure(username="m", role=Role.CRM_MANAGER)
    )
    with django_capture_on_commit_callbacks(execute=True):
        segment_create(key="buyers", name="Buyers", kind="dynamic", rule=BUYERS)

    profile = staff_client(Role.CRM_AGENT).get(f"/api/v1/members/{zhang['member']}/").json()

    assert [
        (t["key"], t["name"], t["kind"], t["added_by"]) for t in profile["tags"] if t["key"] == "vip"
    ] == [("vip", "VIP", "manual", "m")]
    buyers = [s for s in profile["segments"] if s["key"] == "buyers"]
    assert [(s["key"], s["name"]) for s in buyers] == [("buyers", "Buyers")]
    assert buyers[0]["entered_at"]


# --- who may do what -----------------------------------------------------------------------------

WRITES = {
    "create segment": ("post", "/api/v1/segments/", {"key": "new", "name": "N", "kind": "static"}),
    "edit segment": ("patch", "/api/v1/segments/vip/", {"name": "x"}),
    "copy segment": ("post", "/api/v1/segments/vip/copy/", {"key": "vip-copy"}),
    "set list": ("put", "/api/v1/segments/vip/members/", {"member_ids": []}),
    "delete segment": ("delete", "/api/v1/segments/vip/", None),
    "list tags": ("get", "/api/v1/tags/", None),
    "create tag": ("post", "/api/v1/tags/", {"key": "new", "name": "N", "kind": "manual"}),
    "edit tag": ("patch", "/api/v1/tags/gift/", {"name": "x"}),
    "delete tag": ("delete", "/api/v1/tags/gift/", None),
    "tag member": ("post", "/api/v1/members/{member}/tags/", {"tag": "gift"}),
    "untag member": ("delete", "/api/v1/members/{member}/tags/gift/", None),
    "tag history": ("get", "/api/v1/members/{member}/tags/history/", None),
}
ALLOWED = {
    Role.CRM_AGENT: {"list tags", "tag member", "untag member", "tag history"},
    Role.CRM_MANAGER: {"list tags", "tag member", "untag member", "tag history"},
    Role.MARKETING: {
        "create segment",
        "edit segment",
        "copy segment",
        "set list",
        "delete segment",
        "list tags",
        "create tag",
        "edit tag",
        "delete tag",
    },
    Role.CHECKOUT: set(),
    Role.ADMIN: set(WRITES),
}


@pytest.mark.parametrize("role", list(ALLOWED))
@pytest.mark.parametrize("endpoint", list(WRITES))
def test_every_endpoint_for_every_role(zhang, vip, role, endpoint):
    tag_create(key="gift", name="Gift", kind="manual")
    method, path, body = WRITES[endpoint]

    response = getattr(staff_client(role), method)(path.format(**zhang), body, format="json")

    assert (response.status_code < 400) == (endpoint in ALLOWED[role]), (
        response.status_code,
        response.content,
    )
    if response.status_code >= 400:
        assert response.status_code == 403


def test_anonymous_callers_are_refused():
    assert staff_client(None).get("/api/v1/tags/").status_code == 401


def test_service_refusals_say_their_status():
    with pytest.raises(DefinitionRefused) as refused:
        tag_create(key="bad key", name="x", kind="manual")

    assert (refused.value.status, refused.value.errors) == (
        400,
        [("key", "1 to 64 letters, digits, - and _")],
    )


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_edits_at_once_cannot_build_a_cycle():
    a = segment_create(key="a", name="A", kind="dynamic", rule=BUYERS)
    b = segment_create(key="b", name="B", kind="dynamic", rule=BUYERS)
    first_wrote, first_may_commit = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def first():
        with transaction.atomic():
            segment_update(segment=a, rule={"segment": "b"})
            first_wrote.set()
            first_may_commit.wait(timeout=10)
        outcomes["first"] = "saved"
        connection.close()

    def second():
        try:
            segment_update(segment=b, rule={"segment": "a"})
            outcomes["second"] = "saved"
        except DefinitionRefused as refused:
            outcomes["second"] = refused.errors
        connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_wrote.wait(timeout=10)
    threads[1].start()
    threads[1].join(timeout=0.5)
    assert threads[1].is_alive()  # waiting for the first edit's lock
    first_may_commit.set()
    for thread in threads:
        thread.join(timeout=30)

    assert outcomes["first"] == "saved"
    assert outcomes["second"] == [
        ("rule.segment", "reads back the segment itself: segment 'b' → segment 'a' → segment 'b'")
    ]
    assert Segment.objects.get(key="b").rule == BUYERS


@pytest.mark.django_db(transaction=True)
def test_staff_adding_one_tag_at_once_record_it_once(zhang):
    vip = tag_create(key="vip", name="VIP", kind="manual")
    users = [staff_user_ensure(username=f"agent-{n}", role=Role.CRM_AGENT) for n in range(4)]
    start = threading.Barrier(4)
    changed: list[bool] = []

    def agent(user):
        start.wait()
        changed.append(member_tag_add(member_id=zhang["member"], tag=vip, by=user).changed)
        connection.close()

    threads = [threading.Thread(target=agent, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(changed) == [False, False, False, True]
    assert TagChange.objects.filter(tag=vip).count() == 1
    assert MemberTag.objects.filter(tag=vip).count() == 1
