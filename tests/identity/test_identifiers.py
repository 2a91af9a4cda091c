"""Extraction and normalization of identifiers."""

import pytest

from identity.identifiers import (
    BlockedIdentifier,
    Identifier,
    InvalidIdentifier,
    NormalizationPolicy,
    identifiers_extract,
    normalize,
)

POLICY = NormalizationPolicy()


@pytest.mark.parametrize(
    "written", ["138 0013 8000", "+86 13800138000", "8613800138000", "13800138000", "0086 138 0013 8000"]
)
def test_every_written_form_of_a_phone_is_one_phone(written):
    assert normalize("phone", written, POLICY) == "+8613800138000"


def test_the_default_region_is_configurable():
    assert normalize("phone", "(415) 555-2671", NormalizationPolicy(default_region="US")) == "+14155552671"


@pytest.mark.parametrize("value", ["12345", "call me", "+86 000"])
def test_unparsable_phones_are_invalid(value):
    with pytest.raises(InvalidIdentifier):
        normalize("phone", value, POLICY)


def test_emails_are_trimmed_and_lower_cased():
    assert normalize("email", "  Zhang.Wei@Example.COM ", POLICY) == "zhang.wei@example.com"


@pytest.mark.parametrize("value", ["not-an-email", "a@b", "two@@example.com"])
def test_malformed_emails_are_invalid(value):
    with pytest.raises(InvalidIdentifier):
        normalize("email", value, POLICY)


@pytest.mark.parametrize(
    "value", ["0", "-1", "null", "NULL", "undefined", "anonymous", "000000", "", "   ", "None"]
)
@pytest.mark.parametrize("type_", ["user_id", "anonymous_id", "member_card", "device_id"])
def test_placeholder_values_are_blocked(type_, value):
    with pytest.raises(BlockedIdentifier):
        normalize(type_, value, POLICY)


def test_the_blocked_list_is_configurable():
    policy = NormalizationPolicy(blocked_values=frozenset({"walk-in"}))

    with pytest.raises(BlockedIdentifier):
        normalize("user_id", "Walk-In", policy)
    assert normalize("user_id", "null", policy) == "null"


def test_ids_are_trimmed_and_numbers_become_strings():
    assert normalize("user_id", "  u-1 ", POLICY) == "u-1"
    assert normalize("member_card", 880012, POLICY) == "880012"


def test_extraction_reads_every_place_an_identifier_can_be():
    extraction = identifiers_extract(
        user_id="u-1",
        anonymous_id="a-1",
        traits={"phone": "138 0013 8000", "email": "Li@Example.com"},
        context={
            "device": {"id": "dev-1"},
            "traits": {"member_card": "C-77"},
            "externalIds": [
                {"id": "oABC", "type": "wechat_openid", "collection": "users", "encoding": "none"},
                {"id": "uXYZ", "type": "wechat_unionid"},
                {"id": 42, "type": "Loyalty-No"},
            ],
        },
        policy=POLICY,
        openid_scope="wx1234",
    )

    assert extraction.identifiers == {
        Identifier("user_id", "u-1"),
        Identifier("anonymous_id", "a-1"),
        Identifier("phone", "+8613800138000"),
        Identifier("email", "li@example.com"),
        Identifier("device_id", "dev-1"),
        Identifier("member_card", "C-77"),
        Identifier("wechat_openid", "wx1234:oABC"),
        Identifier("wechat_unionid", "uXYZ"),
        Identifier("loyalty_no", "42"),
    }
    assert extraction.problems == ()


def test_bad_values_are_reported_not_used():
    extraction = identifiers_extract(
        user_id="0",
        anonymous_id="a-1",
        traits={"phone": "12345", "email": {"nested": True}},
        context={"externalIds": [{"id": "x", "type": "???"}, "junk"]},
        policy=POLICY,
    )

    assert extraction.identifiers == {Identifier("anonymous_id", "a-1")}
    assert {(p.type, p.reason) for p in extraction.problems} == {
        ("user_id", "blocked"),
        ("phone", "invalid"),
        ("email", "invalid"),
        ("???", "invalid"),
    }


def test_an_alias_carries_its_previous_id_as_a_user_id_and_an_anonymous_id():
    extraction = identifiers_extract(
        user_id="cust-1", anonymous_id="", traits={}, context={}, policy=POLICY,
        message_type="alias", previous_id=" old-1 ",
    )  # fmt: skip

    assert extraction.identifiers == {
        Identifier("user_id", "cust-1"),
        Identifier("user_id", "old-1"),
        Identifier("anonymous_id", "old-1"),
    }
    assert extraction.vouches


def test_previous_id_counts_only_on_an_alias():
    extraction = identifiers_extract(
        user_id="cust-1", anonymous_id="", traits={}, context={}, policy=POLICY,
        message_type="track", previous_id="old-1",
    )  # fmt: skip

    assert extraction.identifiers == {Identifier("user_id", "cust-1")}
    assert not extraction.vouches


def test_a_group_calls_traits_are_the_groups_not_the_persons():
    extraction = identifiers_extract(
        user_id="cust-1",
        anonymous_id="",
        traits={"name": "ACME Ltd", "email": "office@acme.example", "phone": "13800138000"},
        context={"traits": {"email": "li@example.com"}},  # the person's, in any call
        policy=POLICY,
        message_type="group",
    )

    assert extraction.identifiers == {Identifier("user_id", "cust-1"), Identifier("email", "li@example.com")}
