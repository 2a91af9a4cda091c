"""Segment exports: CSV and NDJSON streamed batch by batch, equal to the members pages, safe to
open in a spreadsheet, masked, consented and audited like the pages."""

import csv
import io
import re
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from cdp.models import AuditEntry
from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from members.consent.statements import marketing_purposes
from members.loyalty.models import PointsAccount
from members.models import MemberAggregate
from members.segments import exports
from members.segments.exports import csv_cell
from members.segments.models import SegmentMember
from tests.factories.consent import consent_grant, consent_state
from tests.members.segments.test_members_fields import members_create, segment_of
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db

FIELDS = "name,phone,email,orders,spend,points,tier,tags,member_card,identifiers.phone,traits.city,traits.vip"


def export(
    role: Role | None, key: str, query: str = "", **headers: Any
) -> tuple[int, Mapping[str, str], bytes]:
    response = staff_client(role).get(f"/api/v1/segments/{key}/export/?{query}", **headers)
    body = response.getvalue()  # streamed or not
    return response.status_code, response.headers, body


def all_pages(role: Role, key: str, fields: str) -> list[dict]:
    client, results, cursor = staff_client(role), [], 0
    while cursor is not None:
        body = client.get(
            f"/api/v1/segments/{key}/members/?page_size=4&cursor={cursor}&fields={fields}"
        ).json()
        results += body["results"]
        cursor = body["next_cursor"]
    return results


def spreadsheet_text(value: object) -> str:
    """What a CSV cell holds for a value of the members page (independent of the code's own)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@pytest.fixture
def audience(zhang) -> str:
    """Zhang Wei and ten more, who consented to every purpose: varied traits, figures and points;
    the fourth of the ten later withdrew from marketing."""
    consent_grant([zhang["member"]])
    others = members_create(
        10, phone=lambda i: f"+86139001390{i:02d}", email=lambda i: f"x{i}@example.com",
        name=lambda i: ["Li Na", "王芳", 'Quote "q", comma', "line\nbreak", None][i % 5],
        city=lambda i: ["Shanghai", None][i % 2],
        vip=lambda i: [True, False, {"since": 2024}][i % 3],
    )  # fmt: skip
    consent_state(
        [others[3]],
        "withdrawn",
        purposes=marketing_purposes(settings.CONSENT_PURPOSES),
        at=datetime(2026, 2, 1, tzinfo=UTC),
    )
    MemberAggregate.objects.bulk_create(
        MemberAggregate(member_id=m, currency="CNY", orders=i, spend=f"{i * 10}.50")
        for i, m in enumerate(others)
    )
    PointsAccount.objects.bulk_create(PointsAccount(member_id=m, balance=i * 7) for i, m in enumerate(others))
    return segment_of("audience", [zhang["member"], *others]).key


@pytest.mark.parametrize(("role", "expected"), [(None, 401), (Role.CRM_AGENT, 403), (Role.CRM_MANAGER, 403),
                                                (Role.CHECKOUT, 403), (Role.MARKETING, 200), (Role.ADMIN, 200)])  # fmt: skip
def test_only_marketing_and_admins_export(audience, role, expected):
    status, headers, _body = export(role, audience, "format=ndjson")

    assert status == expected
    if expected != 200:
        assert headers["Content-Type"] == "application/json"
        assert not AuditEntry.objects.filter(action=AuditEntry.Action.EXPORT_SEGMENT).exists()


@pytest.mark.parametrize("role", [Role.MARKETING, Role.ADMIN])
def test_ndjson_and_csv_hold_exactly_the_members_pages(audience, role):
    pages = all_pages(role, audience, FIELDS)

    _, ndjson_headers, ndjson = export(role, audience, f"format=ndjson&fields={FIELDS}")
    _, csv_headers, text = export(role, audience, f"format=csv&fields={FIELDS}")

    assert len(pages) == 10  # the one who withdrew is left out
    assert [orjson.loads(line) for line in ndjson.splitlines()] == pages
    rows = list(csv.reader(io.StringIO(text.decode(), newline="")))
    assert rows[0] == ["member_id", "entered_at", *FIELDS.split(",")]
    assert rows[1:] == [[spreadsheet_text(value) for value in member.values()] for member in pages]
    assert ndjson_headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert csv_headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="segment-audience-\d{8}T\d{6}Z\.csv"', csv_headers["Content-Disposition"]
    )
    assert csv_headers["Cache-Control"] == "no-store"


def test_an_export_streams_a_batch_per_query_and_never_holds_the_segment(monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_BATCH", 1000)
    ids = members_create(3500, {"name": "N"})
    segment = segment_of("big", ids)
    response = staff_client(Role.MARKETING).get("/api/v1/segments/big/export/?format=csv&fields=name")
    chunks, queries = iter(response.streaming_content), []

    with CaptureQueriesContext(connection) as header_read:
        header = next(chunks)
    for _ in range(4):
        with CaptureQueriesContext(connection) as read:
            chunk = next(chunks)
        queries.append(len(read))
        assert chunk.count(b"\r\n") == (1000 if len(queries) < 4 else 500)
    with CaptureQueriesContext(connection) as end:
        rest = list(chunks)

    assert (header, len(header_read)) == (
        b"member_id,entered_at,name\r\n",
        0,
    )  # the header comes before any read
    assert queries == [1, 1, 1, 1]  # one query per batch: 1000, 1000, 1000, 500 members
    assert (rest, len(end)) == ([], 0)  # a short batch is the last: no query to find nothing
    [entry] = AuditEntry.objects.filter(action=AuditEntry.Action.EXPORT_SEGMENT)
    assert (entry.detail, entry.personal_fields) == (
        f"segment {segment.key} as csv for marketing, 3500 rows, withheld no_consent=0, personal data masked: "
        "member_id,entered_at,name",
        [],
    )  # fmt: skip


def test_a_segment_of_exactly_whole_batches_ends_on_an_empty_read(monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_BATCH", 2)
    segment_of("even", members_create(4))

    with CaptureQueriesContext(connection) as reads:
        status, _, body = export(Role.MARKETING, "even", "format=ndjson")

    assert (status, len(body.splitlines())) == (200, 4)
    # The batches (the count of members left out, for the audit entry, reads it once besides).
    batches = [q for q in reads if "members_segmentmember" in q["sql"] and "count(*)" not in q["sql"]]
    assert sum("LIMIT" in q["sql"] for q in batches) == 3


def test_an_admins_export_audits_itself_and_each_batch_of_members_shown_in_full(audience, zhang, monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_BATCH", 4)

    export(Role.ADMIN, audience, "fields=name,phone")
    export(Role.MARKETING, audience, "fields=name,phone")  # masked: only the export itself

    entries = list(
        AuditEntry.objects.order_by("id").values_list(
            "action", "member_ids", "user__username", "detail", "personal_fields"
        )
    )
    exported = [e for e in entries if e[0] == AuditEntry.Action.EXPORT_SEGMENT]
    shown = [e for e in entries if e[0] == AuditEntry.Action.VIEW_CONTACT_DETAILS]
    # The export says whether personal data left in full, and which of its fields are personal.
    assert [(user, detail, fields) for _, _, user, detail, fields in exported] == [
        ("staff-admin", "segment audience as csv for marketing, 10 rows, withheld no_consent=1, personal data "
         "in full: member_id,entered_at,name,phone", ["name", "phone"]),
        ("staff-marketing", "segment audience as csv for marketing, 10 rows, withheld no_consent=1, personal data "
         "masked: member_id,entered_at,name,phone", []),
    ]  # fmt: skip
    members = sorted(SegmentMember.objects.filter(segment__key=audience).values_list("member_id", flat=True))
    refused = members[4]  # the fourth of the ten others withdrew from marketing: left out
    assert [ids for _, ids, _, _, _ in shown] == [
        members[:4],
        [m for m in members[4:8] if m != refused],
        members[8:],
    ]
    assert {user for _, _, user, _, _ in shown} == {"staff-admin"}
    assert {tuple(fields) for *_, fields in shown} == {("phone", "traits.name")}


def test_cells_a_spreadsheet_would_run_are_defused_and_numbers_are_left_alone():
    names = [
        '=HYPERLINK("http://x")',
        "+86 138",
        "-2+3",
        "@SUM(A1)",
        "\tcmd",
        "\rcmd",
        "plain = text",
        "'quoted",
    ]
    ids = members_create(len(names), name=lambda i: names[i])
    PointsAccount.objects.create(member_id=ids[0], balance=-20)
    MemberAggregate.objects.create(member_id=ids[0], currency="CNY", spend="-5.00")
    segment_of("risky", ids)

    # An admin's: names in full (marketing's are masked).
    _, _, text = export(Role.ADMIN, "risky", "format=csv&fields=name,points,spend,traits.name")
    _, _, ndjson = export(Role.ADMIN, "risky", "format=ndjson&fields=name")

    rows = list(csv.reader(io.StringIO(text.decode(), newline="")))[1:]
    assert [row[2] for row in rows] == ["'=HYPERLINK(\"http://x\")", "'+86 138", "'-2+3", "'@SUM(A1)", "'\tcmd",
                                        "'\rcmd", "plain = text", "'quoted"]  # fmt: skip
    assert [row[5] for row in rows] == [row[2] for row in rows]
    assert rows[0][3:5] == ["-20", "-5.00"]
    assert [orjson.loads(line)["name"] for line in ndjson.splitlines()] == names  # JSON is not a spreadsheet


@given(
    st.one_of(st.text(), st.none(), st.booleans(), st.integers(), st.lists(st.text(max_size=3), max_size=3))
)
def test_no_cell_starts_a_formula_and_text_reads_back(value):
    cell = csv_cell(value)
    buffer = io.StringIO()
    csv.writer(buffer).writerow([cell, "next"])

    [[read, _]] = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))

    assert read == cell
    if isinstance(value, str):
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert cell in (value, "'" + value)


@pytest.mark.parametrize(
    ("query", "accept", "content_type"),
    [
        ("", "*/*", "text/csv; charset=utf-8"),
        ("", "text/csv", "text/csv; charset=utf-8"),
        ("", "application/x-ndjson", "application/x-ndjson; charset=utf-8"),
        ("format=ndjson", "text/csv", "application/x-ndjson; charset=utf-8"),  # ?format= wins
        ("format=csv", "application/json", "text/csv; charset=utf-8"),
    ],
)
def test_the_format_comes_from_the_query_or_the_accept_header(audience, query, accept, content_type):
    status, headers, _ = export(Role.MARKETING, audience, query, HTTP_ACCEPT=accept)

    assert (status, headers["Content-Type"]) == (200, content_type)


@pytest.mark.parametrize(
    ("key", "query", "accept", "status", "field"),
    [
        ("audience", "format=xlsx", "*/*", 400, "format"),
        ("audience", "format=csv&fields=phone,shoe_size", "text/csv", 400, "fields"),
        ("audience", "", "application/json", 406, None),
        ("nope", "format=csv", "*/*", 404, None),
    ],
)
def test_a_bad_export_request_is_answered_in_json_and_exports_nothing(
    audience, key, query, accept, status, field
):
    code, headers, body = export(Role.MARKETING, key, query, HTTP_ACCEPT=accept)

    assert (code, headers["Content-Type"]) == (status, "application/json")
    assert [e["field"] for e in orjson.loads(body)["errors"]] == ([field] if field else [])
    assert not AuditEntry.objects.exclude(action=AuditEntry.Action.CHANGE_ROLE).exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_export_streams_over_real_http_as_it_is_read(live_server, monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_BATCH", 500)
    ids = members_create(1200, {"name": "N"})
    segment_of("wire", ids)
    token = token_issue(user=staff_user_ensure(username="tool", role=Role.MARKETING), name="t").secret
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/segments/wire/export/?format=ndjson&fields=name",
        headers={"Authorization": f"Token {token}"},
    )

    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
        assert response.headers.get("Content-Length") is None  # streamed, not buffered whole
        lines = [orjson.loads(line) for line in response]

    assert [line["member_id"] for line in lines] == ids
