"""Phones, emails and names at rest (README, "Personal data at rest"): sealed with AES-256-GCM in
the identifier and trait tables, matched and looked up by a keyed blind index, shown opened
(and masked as before) to staff; the upgrade seals what was stored in the clear and matching
keeps working across it; keys rotate."""

import base64
import io
import secrets

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from cdp.roles import Role
from cdp.sealing import Sealer, SealingError, SealingKeys, is_sealed, name_terms
from cdp.vault import identifier_index, sealer
from events.pipeline import events_process_pending
from identity.models import EventResolution, Identifier
from identity.sealing import identifiers_seal, records_seal
from members.models import MemberTrait
from members.sealing import traits_seal
from tests.factories import EventFactory, SourceFactory
from tests.members.privacy.person import EMAIL, NAMES, PHONE, lin_lives, ok, written_forms
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db

#: The tables a dump of which must show no phone, email or name of anyone.
SEALED_TABLES = ("identity_identifier", "members_membertrait", "identity_mergerecord", "identity_splitrecord")


@pytest.fixture
def lin():
    yield from lin_lives()


def dump(table: str) -> str:
    """The table as a database dump or a backup holds it (``COPY ... TO STDOUT``, what pg_dump
    writes), as text."""
    out = io.BytesIO()
    with connection.cursor() as cursor, cursor.connection.cursor().copy(f"COPY {table} TO STDOUT") as copy:
        for chunk in copy:
            out.write(chunk)
    return out.getvalue().decode()


def personal_forms() -> list[str]:
    """Her phone, email and names in every written form (``written_forms`` without the ids,
    which are not sealed: they are pseudonymous keys, not contact data)."""
    ids = {"u-lin", "mc-7731", "ounion", "oopen", "dev-lin", "anon-lin", "%2d", "mc-99"}
    return [f for f in written_forms() if not any(i in f.casefold() for i in ids)]


def test_a_raw_dump_of_the_identifier_and_trait_tables_holds_no_phone_email_or_name(lin):
    forms = personal_forms()
    assert PHONE in forms
    assert EMAIL in forms
    assert set(NAMES) <= set(forms)

    for table in SEALED_TABLES:
        text = dump(table).casefold()
        assert text, table
        assert [f for f in forms if f.casefold() in text] == [], table
    # ... and yet she holds them: sealed, and opened for those who may see them.
    phone = Identifier.objects.get(member_id=lin.member, type="phone")
    assert phone.value == identifier_index("phone", PHONE)
    assert is_sealed(phone.sealed)
    name = MemberTrait.objects.get(member_id=lin.member, key="name")
    assert is_sealed(name.value)
    assert name.lookup
    manager = ok(staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/{lin.member}/")).json()
    agent = ok(staff_client(Role.CRM_AGENT).get(f"/api/v1/members/{lin.member}/")).json()
    assert [i["value"] for i in manager["identifiers"]["phone"]] == [PHONE]
    assert [i["value"] for i in manager["identifiers"]["email"]] == [EMAIL]
    assert [i["value"] for i in agent["identifiers"]["phone"]] == ["138****8000"]  # masked as before
    traits = {key: trait["value"] for key, trait in manager["traits"].items()}
    assert (traits["name"], traits["first_name"], traits["last_name"]) == (NAMES[0], *NAMES[2:4])
    assert agent["traits"]["name"]["value"] == "X***"


@pytest.mark.parametrize(
    "query",
    ["phone=138 0013 8000", "phone=%2B8613800138000", "email=LIN.XIUYING@example.com", "q=Lindqvist",
     "q=xiuying  LINDQVIST", "q=Xiuying"],
)  # fmt: skip
def test_lookups_by_phone_email_and_name_find_her_through_the_blind_index(lin, query):
    found = ok(staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/?{query}")).json()["results"]

    assert [m["id"] for m in found] == [lin.member]
    assert found[0]["phone"] == PHONE  # the result line opens the phone


def test_part_of_a_word_finds_nobody_a_blind_index_matches_whole_terms(lin):
    manager = staff_client(Role.CRM_MANAGER)

    assert ok(manager.get("/api/v1/members/?q=Lindq")).json()["results"] == []


def test_name_terms_are_the_name_its_words_and_a_chinese_family_name():
    assert name_terms("  Xiuying   LINDQVIST ") == {"xiuying lindqvist", "xiuying", "lindqvist"}
    assert name_terms("林秀英") == {"林秀英", "林", "林秀"}
    assert name_terms("王芳") == {"王芳", "王"}
    assert name_terms("   ") == frozenset()


def test_a_sealed_value_opens_only_in_its_own_place_and_under_a_configured_key():
    keys = SealingKeys.parse("a=" + base64.b64encode(secrets.token_bytes(32)).decode())
    one = Sealer(keys, b"index")
    sealed = one.seal("+8613800138000", context="identifier:phone:x")

    assert one.open(sealed, context="identifier:phone:x") == "+8613800138000"
    assert sealed != one.seal("+8613800138000", context="identifier:phone:x")  # a fresh nonce each time
    with pytest.raises(SealingError, match="does not open"):
        one.open(sealed, context="identifier:phone:y")  # moved to another row
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealingError):
        one.open(tampered, context="identifier:phone:x")
    other = Sealer(SealingKeys.parse("b=" + base64.b64encode(secrets.token_bytes(32)).decode()), b"index")
    with pytest.raises(SealingError, match="not configured"):
        other.open(sealed, context="identifier:phone:x")
    assert (
        one.index("phone", "+86")
        == other.index("phone", "+86")
        != Sealer(keys, b"other").index("phone", "+86")
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "no key"), ("a=notbase64!", "not base64"), ("a=" + base64.b64encode(b"short").decode(), "32 bytes"),
     ("a b=" + base64.b64encode(bytes(32)).decode(), "key id"),
     ("a=" + base64.b64encode(bytes(32)).decode() + ",a=" + base64.b64encode(bytes(32)).decode(), "twice")],
)  # fmt: skip
def test_a_bad_key_list_is_refused_saying_why(text, reason):
    with pytest.raises(SealingError, match=reason):
        SealingKeys.parse(text)


def test_the_upgrade_seals_what_was_stored_in_the_clear_and_matching_keeps_working():
    """Rows as an earlier release wrote them (in the clear) are sealed by the upgrade's code, and
    a later event with the same phone in another written form joins the same member."""
    till = SourceFactory(pos=True, store_code="SH01")
    first = EventFactory(source=till, type="identify", user_id="u-1", event="",
                         traits={"phone": "13900139000", "email": "Wang@Example.com", "name": "王芳"})  # fmt: skip
    events_process_pending()
    member = EventResolution.objects.get(event=first).member_id
    # Back to the clear, as before the upgrade.
    for row in Identifier.objects.filter(type__in=["phone", "email"]):
        value = {"phone": "+8613900139000", "email": "wang@example.com"}[row.type]
        Identifier.objects.filter(pk=row.pk).update(value=value, sealed="")
    for trait in MemberTrait.objects.filter(member_id=member, key__in=["phone", "email", "name"]):
        plain = {"phone": "13900139000", "email": "Wang@Example.com", "name": "王芳"}[trait.key]
        MemberTrait.objects.filter(pk=trait.pk).update(value=plain, lookup=[])
    assert "+8613900139000" in dump("identity_identifier")

    assert identifiers_seal(batch_size=1) == 2  # batches of one: the keyset walk goes on
    assert identifiers_seal() == 0  # done: nothing twice
    records_seal()
    assert traits_seal(batch_size=2) == 3
    assert traits_seal() == 0

    assert "+8613900139000" not in dump("identity_identifier")
    assert "王芳" not in dump("members_membertrait")
    later = EventFactory(source=till, type="track", event="Product Viewed", user_id="", anonymous_id="a-9",
                         context={"traits": {"phone": "+86 139-0013-9000"}})  # fmt: skip
    events_process_pending()
    assert EventResolution.objects.get(event=later).member_id == member
    found = ok(staff_client(Role.CRM_MANAGER).get("/api/v1/members/?q=王")).json()["results"]
    assert [m["id"] for m in found] == [member]


def test_keys_rotate_new_values_seal_under_the_first_key_and_rotate_seals_again(lin):
    old = sealer().keys.current
    new_key = "next=" + base64.b64encode(secrets.token_bytes(32)).decode()
    from django.conf import settings

    with override_settings(PRIVACY_SEALING_KEYS=f"{new_key},{settings.PRIVACY_SEALING_KEYS}"):
        phone = Identifier.objects.get(member_id=lin.member, type="phone")
        assert sealer().key_of(phone.sealed) == old  # still opens under the old key
        assert ok(staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/?phone={PHONE}")).json()["results"]
        out = io.StringIO()
        call_command("seal_personal_data", "--rotate", stdout=out)
        assert "sealed " in out.getvalue()
        assert " identifiers" in out.getvalue()
        phone.refresh_from_db()
        assert sealer().key_of(phone.sealed) == "next"
        assert {sealer().key_of(v) for v in MemberTrait.objects.filter(member_id=lin.member).values_list(
            "value", flat=True) if is_sealed(v)} == {"next"}  # fmt: skip
    with override_settings(PRIVACY_SEALING_KEYS=new_key):  # the old key dropped: all still opens
        profile = ok(staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/{lin.member}/")).json()
        assert [i["value"] for i in profile["identifiers"]["phone"]] == [PHONE]


def test_a_rule_comparing_a_sealed_trait_is_refused_naming_the_field():
    marketing = staff_client(Role.MARKETING)
    refused = marketing.post(
        "/api/v1/segments/",
        {"key": "corp", "name": "Corporate", "kind": "dynamic",
         "rule": {"all": [{"trait": "city", "op": "eq", "value": "Shanghai"},
                          {"trait": "email", "op": "contains", "value": "@corp.example"}]}},
        format="json",
    )  # fmt: skip
    assert refused.status_code == 400
    [error] = refused.json()["errors"]
    assert error["field"] == "rule.all[1].op"
    assert "sealed at rest" in error["reason"]
    allowed = marketing.post(
        "/api/v1/segments/",
        {
            "key": "reachable",
            "name": "Has an email",
            "kind": "dynamic",
            "rule": {"trait": "email", "op": "exists"},
        },
        format="json",
    )
    assert allowed.status_code == 201, allowed.content
