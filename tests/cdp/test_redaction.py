"""The redactor of one person's values and the keyed fingerprints an erasure keeps (pure)."""

import json
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from cdp.fingerprints import fingerprint
from cdp.redaction import REDACTED, Redactor, phone_forms
from identity.identifiers import Identifier, NormalizationPolicy, erased_probes, identifier_probes

LIN = Redactor(phones=["+8613800138000"], texts=["Lin.Xiuying@Example.com", "林秀英", "u-lin-7731"])
SPELLINGS = [
    "+8613800138000", "8613800138000", "008613800138000", "13800138000", "138 0013 8000", "138-0013-8000",
    "+86 138 0013 8000", "(+86) 138.0013.8000", "138/0013/8000", "0138 0013 8000",
]  # fmt: skip


def test_every_spelling_of_the_phone_and_every_case_of_the_texts_goes():
    for spelled in SPELLINGS:
        cleaned = LIN.text(f"call {spelled} today")
        assert cleaned in (f"call {REDACTED} today", f"call ({REDACTED} today"), spelled  # "(" may stay
    assert (
        LIN.text("mail LIN.XIUYING@EXAMPLE.COM or lin.xiuying@example.com")
        == f"mail {REDACTED} or {REDACTED}"
    )
    assert LIN.text("User U-LIN-7731 (林秀英)") == f"User {REDACTED} ({REDACTED})"


def test_escaped_and_url_encoded_spellings_go_too():
    escaped = json.dumps({"name": "林秀英"})  # {"name": "\u6797\u79c0\u82f1"}
    assert "\\u6797" in escaped
    assert LIN.text(escaped) == json.dumps({"name": REDACTED})
    assert (
        LIN.text(f"/api/v1/members/?email={quote('Lin.Xiuying@Example.com')}")
        == f"/api/v1/members/?email={REDACTED}"
    )
    assert LIN.text("/api/v1/members/?phone=138+0013+8000") == f"/api/v1/members/?phone={REDACTED}"


def test_other_numbers_and_people_stay():
    text = "order 13800138001, phone 139 1234 5678, card 6222 0213 8000 1380 0138 000, Lin Hua"
    assert LIN.text(text) == text


def test_json_values_that_were_only_the_person_are_removed():
    document = {
        "phone": "138 0013 8000", "mobile": 13800138000, "emails": ["lin.xiuying@example.com", "shop@example.com"],
        "note": "deliver to 林秀英 at the back door", "u-lin-7731": "a key", "items": [{"sku": "TEA-1"}],
    }  # fmt: skip
    assert LIN.value(document) == {
        "emails": ["shop@example.com"], "note": f"deliver to {REDACTED} at the back door", "items": [{"sku": "TEA-1"}],
    }  # fmt: skip
    assert LIN.value("u-lin-7731") == ""


@given(
    before=st.text(alphabet=st.characters(blacklist_categories=["Nd", "Cs"]), max_size=20),
    after=st.text(alphabet=st.characters(blacklist_categories=["Nd", "Cs"]), max_size=20),
    spelled=st.sampled_from(SPELLINGS + phone_forms("+8613800138000")),
)
def test_a_phone_planted_anywhere_in_a_text_is_not_readable_after(before, after, spelled):
    cleaned = LIN.text(f"{before} {spelled} {after}")
    assert "".join(c for c in cleaned if c.isdigit()).find("13800138000") == -1


def test_fingerprints_are_keyed_and_recognise_a_phone_or_email_in_any_type():
    assert fingerprint("phone", "+8613800138000", key=b"k1") != fingerprint(
        "phone", "+8613800138000", key=b"k2"
    )
    assert fingerprint("phone", "+8613800138000", key=b"k1") == fingerprint(
        "phone", "+8613800138000", key=b"k1"
    )
    assert identifier_probes(Identifier("user_id", "138 0013 8000")) == {
        ("user_id", "138 0013 8000"), ("phone_digits", "13800138000"),
    }  # fmt: skip
    assert identifier_probes(Identifier("crm_id", "Lin@Example.com")) == {
        ("crm_id", "Lin@Example.com"), ("email", "lin@example.com"),
    }  # fmt: skip
    assert identifier_probes(Identifier("anonymous_id", "3f2a-77b1")) == {("anonymous_id", "3f2a-77b1")}
    # An erased phone (or a user id that is one) keeps every digit form a later value may take.
    forms = erased_probes(Identifier("user_id", "13800138000"), NormalizationPolicy())
    assert forms >= {("phone", "+8613800138000"), ("phone_digits", "8613800138000"),
                     ("phone_digits", "008613800138000"), ("phone_digits", "13800138000")}  # fmt: skip
    later = [Identifier("phone", "+8613800138000"), Identifier("member_card", "+86-138-0013-8000"),
             Identifier("user_id", "0086 13800138000")]  # fmt: skip
    assert all(identifier_probes(i) & forms for i in later)
