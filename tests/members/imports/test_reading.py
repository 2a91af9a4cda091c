"""Reading files (gzip, UTF-8 / GB18030, CSV / NDJSON), mappings and rows: pure, no database."""

import gzip
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from identity.identifiers import NormalizationPolicy
from members.imports.mapping import MappingInvalid, mapping_parse, mapping_text_read
from members.imports.reading import FileUnreadable, RecordReader, encoding_detect
from members.imports.rows import RowContext, message_id, row_plan

CSV = 'member_id,name,phone\nM1,张三,13800138000\nM2,"Li, Si",13900139000\n'
CTX = RowContext(
    name="crm",
    zone=ZoneInfo("Asia/Shanghai"),
    now=datetime(2026, 1, 1, tzinfo=UTC),
    policy=NormalizationPolicy(),
)


def _write(tmp_path: Path, name: str, data: bytes, *, gz: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
@pytest.mark.parametrize("gz", [False, True])
def test_csv_in_either_encoding_gzipped_or_not(tmp_path, encoding, gz):
    path = _write(tmp_path, "m.csv.gz" if gz else "m.csv", CSV.encode(encoding), gz=gz)
    assert encoding_detect(path) == encoding
    with RecordReader(path) as reader:
        records = list(reader)
    assert [(r.number, r.line) for r in records] == [(1, 2), (2, 3)]
    assert records[0].fields == {"member_id": "M1", "name": "张三", "phone": "13800138000"}
    assert records[1].fields["name"] == "Li, Si"


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    path = _write(tmp_path, "m.csv", b"\xef\xbb\xbf" + CSV.encode())
    with RecordReader(path) as reader:
        assert "member_id" in next(iter(reader)).fields


def test_a_bad_csv_record_is_reported_and_the_next_ones_read(tmp_path):
    path = _write(tmp_path, "m.csv", b"a,b\n1,2\n1,2,3\n\n4,5\n")
    with RecordReader(path) as reader:
        records = list(reader)
    assert [(r.number, r.line, r.fields is None) for r in records] == [
        (1, 2, False),
        (2, 3, True),
        (3, 5, False),
    ]
    assert "3 fields where the header names 2" in records[1].problem


def test_ndjson_lines_each_an_object(tmp_path):
    path = _write(
        tmp_path, "o.ndjson.gz", b'{"order_id": "O1"}\n\nnot json\n[1]\n{"order_id": "O2"}\n', gz=True
    )
    with RecordReader(path) as reader:
        records = list(reader)
    assert [r.line for r in records] == [1, 3, 4, 5]
    assert records[0].fields == {"order_id": "O1"}
    assert records[1].problem.startswith("not JSON")
    assert records[2].problem == "each line must be a JSON object"


def test_a_file_not_in_its_encoding_fails_as_a_whole(tmp_path):
    path = _write(tmp_path, "m.csv", "a\n张\n".encode("gb18030"))
    with RecordReader(path, encoding="utf-8") as reader, pytest.raises(FileUnreadable, match="not utf-8"):
        list(reader)


def test_mapping_renames_columns_and_fills_defaults():
    mapping = mapping_text_read(
        "columns:\n  会员编号: member_id\n  备注: null\ndefaults:\n  channel: pos\ntimezone: Asia/Shanghai\n"
    )
    parsed = mapping_parse(mapping)
    assert parsed.apply({"会员编号": " M1 ", "备注": "x", "other": "y"}) == {
        "member_id": "M1",
        "other": "y",
        "channel": "pos",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("columns: [1]", "columns"),
        ("timezone: Mars/Base", "timezone"),
        ("encoding: latin-1", "encoding"),
        ("colums: {}", "unknown keys"),
        ("{", "not valid YAML"),
    ],
)
def test_a_bad_mapping_says_which_key(text, message):
    with pytest.raises(MappingInvalid, match=message):
        mapping_text_read(text)


def test_member_row_becomes_an_identify_and_a_consent_event():
    plan = row_plan(
        "members",
        {
            "member_id": "M1",
            "phone": "13800138000",
            "member_card": "C1",
            "id.crm_no": "77",
            "name": "张三",
            "registered_at": "2021-03-04 10:00:00",
            "consent.marketing_sms": "yes",
            "consent_source": "store form",
        },
        CTX,
    )
    assert not plan.problems
    identify, consent = (o.message for o in plan.outgoing)
    assert identify["messageId"] == "import:member:M1"
    assert identify["anonymousId"] == "crm:M1"
    assert identify["traits"] == {"phone": "13800138000", "member_card": "C1", "name": "张三"}
    assert identify["context"]["externalIds"] == [{"type": "crm_no", "id": "77", "collection": "users"}]
    assert identify["timestamp"] == "2021-03-04T10:00:00+08:00"  # naive: the mapping's zone
    assert consent["event"] == "Consent Updated"
    assert consent["properties"] == {"consent": {"marketing_sms": "granted"}}
    assert consent["context"]["app"] == {"name": "store form"}


def test_order_row_amounts_as_numbers_and_its_channel():
    plan = row_plan(
        "orders",
        {"order_id": "O1", "phone": "13800138000", "channel": "POS", "store": "S1", "total": "1,200.50",
         "completed_at": "2024-01-01T08:00:00Z", "items": '[{"sku": "A", "price": 600.25, "quantity": 2}]'},
        CTX,
    )  # fmt: skip
    (outgoing,) = plan.outgoing
    assert (outgoing.channel, outgoing.store) == ("pos", "S1")
    assert outgoing.message["properties"]["total"] == 1200.5
    assert outgoing.message["properties"]["products"][0]["sku"] == "A"
    assert outgoing.message["anonymousId"] == "crm:order:O1"  # a till's own id for a phone-only sale
    assert outgoing.message["context"]["traits"] == {"phone": "13800138000"}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (
            {
                "order_id": "O1",
                "member_id": "M1",
                "channel": "pos",
                "total": "1",
                "completed_at": "2024-01-01",
            },
            "store",
        ),
        (
            {
                "order_id": "O1",
                "member_id": "M1",
                "channel": "fax",
                "total": "1",
                "completed_at": "2024-01-01",
            },
            "channel",
        ),
        (
            {
                "order_id": "O1",
                "member_id": "M1",
                "channel": "web",
                "total": "x",
                "completed_at": "2024-01-01",
            },
            "total",
        ),
        (
            {
                "order_id": "O1",
                "member_id": "M1",
                "channel": "web",
                "total": "1",
                "completed_at": "yesterday",
            },
            "completed_at",
        ),
        ({"order_id": "O1", "channel": "web", "total": "1", "completed_at": "2024-01-01"}, "member_id"),
        (
            {"order_id": "", "member_id": "M1", "channel": "web", "total": "1", "completed_at": "2024-01-01"},
            "order_id",
        ),
    ],
)
def test_a_bad_order_row_names_its_field(row, field):
    plan = row_plan("orders", row, CTX)
    assert field in {p.field for p in plan.problems}
    assert not plan.outgoing


def test_loyalty_rows_name_their_member_by_normalized_identifiers():
    plan = row_plan("balances", {"member_id": "M1", "phone": "138 0013 8000", "points": "1,500"}, CTX)
    assert plan.opening is not None
    assert plan.opening.points == 1500
    assert plan.opening.key == "opening:crm:M1"
    assert plan.opening.member.identifiers == (("anonymous_id", "crm:M1"), ("phone", "+8613800138000"))
    assert row_plan("balances", {"member_id": "M1", "points": "1.5"}, CTX).problems[0].field == "points"


def test_message_ids_are_deterministic_and_fit_the_column():
    assert message_id("order", "O1") == message_id("order", "O1")
    assert len(message_id("order", "x" * 400)) <= 255
