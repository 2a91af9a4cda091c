"""Personal fields found by key and by value at any depth, masked and stripped (``cdp.personal``)."""

import json
import string

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp.personal import (
    DEFAULT_PERSONAL_KEYS,
    REMOVED,
    Kind,
    PersonalPolicy,
    key_name,
    mask_email,
    mask_phone,
    path_text,
    personal_find,
    personal_mask,
    personal_strip,
)

POLICY = PersonalPolicy.build(DEFAULT_PERSONAL_KEYS, default_region="CN")


# -- the shapes the issue names ----------------------------------------------------------------

TRAITS = {
    "mobile": "13800138000",
    "phone_number": "+86 139 0013 9000",
    "emails": ["Zhang.Wei@Example.com", "zw@work.cn"],
    "contact": {"email": "contact@example.org", "phone": 13700137000},
    "address": {"city": "Shanghai", "phone": "13600136000"},
    "name": "Zhang Wei",
    "firstName": "Wei",
    "tier_hint": "gold",
    "visits": 12,
}


def test_every_shape_the_issue_names_is_masked():
    masked = personal_mask(TRAITS, POLICY, at=("traits",))
    assert masked.value == {
        "mobile": "138****8000",
        "phone_number": "139****9000",
        "emails": ["z***@example.com", "z***@work.cn"],
        "contact": {"email": "c***@example.org", "phone": "137****7000"},
        "address": {"city": "S***", "phone": "136****6000"},
        "name": "Z***",
        "firstName": "W***",
        "tier_hint": "gold",
        "visits": 12,
    }
    assert set(masked.paths) == {
        "traits.mobile",
        "traits.phone_number",
        "traits.emails[0]",
        "traits.emails[1]",
        "traits.contact.email",
        "traits.contact.phone",
        "traits.address.city",
        "traits.address.phone",
        "traits.name",
        "traits.firstName",
    }
    assert TRAITS["mobile"] == "13800138000"  # a copy: the document itself is unchanged


def test_shipping_address_in_properties():
    properties = {
        "order_id": "SH-20240101-0001",
        "total": 1299.0,
        "products": [{"sku": "TEE-1", "name": "Linen tee", "price": 199.0}],
        "shipping_address": {"phone": "13800138000", "email": "a@b.cn", "city": "Hangzhou"},
    }
    masked = personal_mask(properties, POLICY, at=("properties",))
    assert masked.value["shipping_address"] == {"phone": "138****8000", "email": "a***@b.cn", "city": "H***"}
    # a product's name and the order number are not the person's
    assert masked.value["products"] == properties["products"]
    assert masked.value["order_id"] == "SH-20240101-0001"


def test_name_is_personal_only_where_it_is_the_persons():
    event = {
        "traits": {"name": "Li Na"},
        "context": {"app": {"name": "Brand app"}, "traits": {"name": "Li Na"}, "library": {"name": "pos"}},
        "properties": {"name": "Product page"},
    }
    found = {f.dotted for f in personal_find(event, POLICY)}
    assert found == {"traits.name", "context.traits.name"}


def test_keys_compare_in_snake_case_and_dotted_entries_take_wildcards():
    policy = PersonalPolicy.build(["phoneNumber", "orders.*.recipient_name"], default_region=None)
    assert policy.key_is_personal(("phone_number",))
    assert policy.key_is_personal(("x", "phone_number"))
    assert policy.key_is_personal(("orders", "o1", "recipient_name"))
    assert not policy.key_is_personal(("orders", "recipient_name"))
    assert key_name("First-Name") == key_name("first name") == key_name("firstName") == "first_name"


def test_phones_and_emails_inside_text():
    note = {"note": "call 138 0013 8000 or write to zw@example.com, thanks"}
    assert personal_mask(note, POLICY).value == {
        "note": "call 138****8000 or write to z***@example.com, thanks"
    }
    assert personal_strip(note, POLICY).value == {"note": f"call {REMOVED} or write to {REMOVED}, thanks"}
    assert [f.kind for f in personal_find(note, POLICY)] == [Kind.PHONE, Kind.EMAIL]  # in text order


def test_a_key_that_is_a_phone_never_reaches_a_path():
    doc = {"by_phone": {"13800138000": {"visits": 3}}}
    masked = personal_mask(doc, POLICY)
    assert masked.value == {"by_phone": {"138****8000": {"visits": 3}}}
    assert masked.paths == ("by_phone.138****8000",)
    assert personal_strip(doc, POLICY).value == {"by_phone": {}}


def test_strip_removes_keys_and_list_elements():
    stripped = personal_strip(
        {"traits": TRAITS, "tags": ["vip", "13800138000", "x@y.cn"], "count": 13900139000}, POLICY
    )
    assert stripped.value == {"traits": {"tier_hint": "gold", "visits": 12}, "tags": ["vip"]}
    assert {"traits.contact", "tags[1]", "count"} <= set(stripped.paths)


@pytest.mark.parametrize(
    "value",
    [
        "order 20240101123",
        "SKU-1234567",
        "1.2.3",
        129900,
        1700000000000,
        "2024-01-01T10:00:00Z",
        "v8800123",
        "S0034670020338",
        "order S0034670020338 paid",
    ],  # its digits would dial Spain (+34 670 020 338)
)
def test_numbers_that_are_not_phones_stay(value):
    assert personal_find({"x": value}, POLICY) == ()


def test_without_a_default_region_only_international_phones_are_phones():
    policy = PersonalPolicy.build([], default_region=None)
    assert personal_find({"x": "13800138000"}, policy) == ()
    assert personal_mask({"x": "+8613800138000"}, policy).value == {"x": "138****8000"}
    assert personal_mask({"x": "008613800138000"}, policy).value == {"x": "138****8000"}


@pytest.mark.parametrize(
    ("written", "masked"),
    [("+8613800138000", "138****8000"), ("008613800138000", "138****8000"), ("(+86) 138 0013 8000", "138****8000"),
     ("13800138000", "138****8000"), ("+1 415 555 2671", "415***2671"), ("+44 20 7123 4567", "207***4567"),
     ("021-12345678", "021****5678"), ("12", "**")],
)  # fmt: skip
def test_a_phone_is_masked_to_its_national_numbers_ends(written, masked):
    assert mask_phone(written) == masked


def test_masks():
    assert mask_email("Zhang.Wei@Example.com") == "z***@example.com"
    assert path_text(("traits", "emails", 0, "value")) == "traits.emails[0].value"


# -- property: no phone or email survives, at any depth -------------------------------------------

CN_MOBILE_PREFIXES = ["130", "133", "135", "138", "139", "150", "158", "177", "180", "186", "189", "199"]
cn_mobiles = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(CN_MOBILE_PREFIXES),
    st.text(alphabet=string.digits, min_size=8, max_size=8),
).filter(lambda n: phonenumbers.is_valid_number(phonenumbers.parse(n, "CN")))


def _example_mobile(region: str) -> str:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert number is not None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


FOREIGN = [_example_mobile(region) for region in ("US", "GB", "DE", "JP", "SG", "HK", "FR")]


def written_cn(national: str) -> st.SearchStrategy[object]:
    """The ways a source writes a Chinese mobile."""
    spaced = f"{national[:3]} {national[3:7]} {national[7:]}"
    return st.sampled_from(
        [national, int(national), f"+86{national}", f"+86 {spaced}", f"{national[:3]}-{national[3:7]}-{national[7:]}",
         f"0086{national}", f"(+86) {spaced}"]
    )  # fmt: skip


def written_foreign(e164: str) -> st.SearchStrategy[object]:
    number = phonenumbers.parse(e164)
    return st.sampled_from(
        [e164, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)]
    )


# Filler holds no digit and no "@": every phone and email in a document is a planted one.
filler_text = st.text(alphabet=string.ascii_letters + " .,;:!?_-'张伟上海", max_size=12)
filler_keys = st.text(alphabet=string.ascii_letters + "_", max_size=8).map(lambda k: f"k_{k}")
filler = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**5), 10**5), st.floats(-1e5, 1e5, allow_nan=False), filler_text
)


@st.composite
def planted_documents(draw: st.DrawFn) -> tuple[object, list[str], list[str]]:
    """(document, national numbers of its phones, its emails)."""
    cn = draw(st.lists(cn_mobiles, min_size=1, max_size=3, unique=True))
    foreign = draw(st.lists(st.sampled_from(FOREIGN), max_size=2, unique=True))
    emails = draw(st.lists(st.emails(), min_size=1, max_size=3, unique=True))
    phone_leaf = st.one_of(
        st.sampled_from(cn).flatmap(written_cn), *([st.sampled_from(foreign).flatmap(written_foreign)] if foreign else [])
    )  # fmt: skip
    email_leaf = st.sampled_from(emails).flatmap(lambda e: st.sampled_from([e, e.upper(), f" {e} "]))
    in_text = st.builds(
        lambda before, value, after: f"{before} {value} {after}",
        filler_text,
        st.one_of(phone_leaf.map(str), email_leaf.map(str.strip)),
        filler_text,
    )
    leaf = st.one_of(filler, filler, phone_leaf, email_leaf, in_text)
    key = st.one_of(filler_keys, filler_keys, filler_keys, phone_leaf.map(str), email_leaf.map(str.strip))
    document = draw(
        st.recursive(
            leaf,
            lambda children: st.one_of(
                st.lists(children, max_size=4), st.dictionaries(key, children, max_size=4)
            ),
            max_leaves=25,
        )
    )
    nationals = cn + [str(phonenumbers.parse(e).national_number) for e in foreign]
    return document, nationals, emails


def _digits_view(value: object) -> str:
    """The document as text with the separators a phone is written with taken out."""
    dumped = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return dumped.translate(str.maketrans("", "", " -().+"))


def _survivors(value: object, nationals: list[str], emails: list[str]) -> list[str]:
    digits = _digits_view(value)
    # A masked email ends its local part in the mask, so "0***@a.com" holds the planted
    # "*@a.com" as text: the mask is taken out first (a local part ending in "***" is not planted
    # in full then; the digits view and the other emails still are).
    text = json.dumps(value, ensure_ascii=False).casefold().replace("***@", "\x00@")
    return [n for n in nationals if n in digits] + [e for e in emails if e.casefold() in text]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_documents())
def test_no_phone_or_email_survives_masking(planted):
    document, nationals, emails = planted
    masked = personal_mask(document, POLICY)
    assert _survivors(masked.value, nationals, emails) == []
    # the same findings as a search, and every path free of the values too
    assert masked.found == personal_find(document, POLICY)
    assert _survivors([f.dotted for f in masked.found], nationals, emails) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_documents())
def test_no_phone_or_email_survives_stripping(planted):
    document, nationals, emails = planted
    stripped = personal_strip(document, POLICY)
    assert _survivors(stripped.value, nationals, emails) == []
    assert personal_find(stripped.value, POLICY) == ()
    assert _survivors([f.dotted for f in stripped.found], nationals, emails) == []


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        filler, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(filler_keys, c, max_size=4))
    )
)
def test_a_document_without_personal_data_comes_back_unchanged(document):
    assert personal_mask(document, POLICY).value == document
    assert personal_strip(document, POLICY).value == document
    assert personal_find(document, POLICY) == ()
