"""What events say of consent, and the consent in force at a moment (pure: no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from members.consent.statements import (
    ConsentFact,
    Stated,
    consent_granted,
    consent_in_force,
    consent_of_event,
    consent_of_traits,
    declared_purposes,
    marketing_purposes,
)

PURPOSES = (
    "marketing_sms",
    "marketing_wechat",
    "marketing_email",
    "marketing_push",
    "personalization",
    "analytics",
)
MARKETING = ("marketing_sms", "marketing_wechat", "marketing_email", "marketing_push")
T = datetime(2026, 10, 1, tzinfo=UTC)


def of_traits(traits: dict) -> dict[str, tuple[str, str, str]]:
    found = consent_of_traits(traits, purposes=PURPOSES, legacy_trait="marketing_consent")
    return {s.purpose: (s.state, s.version, s.origin) for s in found}


def test_booleans_states_and_the_structured_form_each_with_its_version():
    assert of_traits(
        {
            "consent": {
                "version": "2026-03",
                "marketing_sms": True,
                "marketing_email": False,
                "analytics": " Withdrawn ",
                "personalization": {"state": "granted", "version": "v7"},
                "marketing_push": {"state": False},
            }
        }
    ) == {
        "marketing_sms": ("granted", "2026-03", "trait"),
        "marketing_email": ("denied", "2026-03", "trait"),
        "analytics": ("withdrawn", "2026-03", "trait"),
        "personalization": ("granted", "v7", "trait"),
        "marketing_push": ("denied", "2026-03", "trait"),
    }


@pytest.mark.parametrize(
    "value", [None, 1, "yes", "maybe", [], {"state": "sure"}, {"version": "v1"}, {"granted": True}]
)
def test_what_states_nothing_is_left_out(value):
    assert of_traits({"consent": {"marketing_sms": value}}) == {}


def test_purposes_not_configured_and_consent_that_is_not_an_object_are_left_out():
    assert of_traits({"consent": {"marketing_fax": True, "Marketing_SMS": True}}) == {}
    assert of_traits({"consent": True}) == of_traits({"consent": "marketing_sms"}) == {}


def test_a_version_is_text_of_at_most_64_characters():
    stated = of_traits({"consent": {"marketing_sms": {"state": "granted", "version": 3}, "analytics": {
        "state": "granted", "version": "x" * 80}, "personalization": {"state": "granted", "version": True}}})  # fmt: skip

    assert stated["marketing_sms"][1] == "3"
    assert stated["analytics"][1] == "x" * 64
    assert stated["personalization"][1] == ""


@pytest.mark.parametrize(
    ("value", "state"),
    [(True, "granted"), (1, "granted"), ("yes", "granted"), (" ON ", "granted"), ("1", "granted"),
     (False, "denied"), (0, "denied"), (0.0, "denied"), ("No", "denied"), ("off", "denied"), ("0", "denied")],
)  # fmt: skip
def test_the_legacy_trait_states_every_marketing_purpose(value, state):
    assert of_traits({"marketing_consent": value}) == dict.fromkeys(MARKETING, (state, "", "legacy_trait"))


@pytest.mark.parametrize("value", [None, "", "perhaps", 2, [], {}])
def test_a_legacy_value_that_says_neither_states_nothing(value):
    assert of_traits({"marketing_consent": value}) == {}


def test_the_consent_trait_wins_over_the_legacy_one_for_the_purposes_it_names():
    stated = of_traits({"marketing_consent": False, "consent": {"marketing_sms": True}})

    assert stated["marketing_sms"] == ("granted", "", "trait")
    assert {p: s[0] for p, s in stated.items() if p != "marketing_sms"} == dict.fromkeys(
        MARKETING[1:], "denied"
    )


def test_a_consent_updated_event_names_a_purpose_a_list_or_an_object():
    def of(properties: dict) -> set[Stated]:
        return set(consent_of_event(properties, purposes=PURPOSES))

    assert of({"purpose": "marketing_sms", "state": "withdrawn", "version": "v2"}) == {
        Stated("marketing_sms", "withdrawn", "v2", "event")
    }
    assert of({"purpose": ["marketing_sms", "analytics", "fax", 5], "state": True}) == {
        Stated("marketing_sms", "granted", "", "event"), Stated("analytics", "granted", "", "event")
    }  # fmt: skip
    assert of({"consent": {"marketing_push": False, "analytics": {"state": "granted", "version": "a1"}},
               "version": "v3"}) == {
        Stated("marketing_push", "denied", "v3", "event"), Stated("analytics", "granted", "a1", "event")
    }  # fmt: skip
    assert (
        of({"purpose": "marketing_sms"})
        == of({"state": "granted"})
        == of({"purpose": "fax", "state": True})
        == set()
    )


def test_the_statement_in_force_is_the_latest_at_or_before_the_moment():
    facts = [
        ConsentFact("marketing_sms", "granted", T, 1),
        ConsentFact("marketing_sms", "withdrawn", T + timedelta(days=2), 2),
        ConsentFact("marketing_sms", "granted", T + timedelta(days=2), 3),  # same instant, recorded later
        ConsentFact("analytics", "denied", T + timedelta(days=1), 4),
        ConsentFact("marketing_sms", "denied", T + timedelta(days=5), 0),  # recorded first, stated last
    ]

    assert consent_in_force(facts, "marketing_sms", T - timedelta(seconds=1)) is None
    assert consent_in_force(facts, "marketing_sms", T) == facts[0]
    assert consent_in_force(facts, "marketing_sms", T + timedelta(days=3)) == facts[2]
    assert consent_in_force(facts, "marketing_sms", T + timedelta(days=9)) == facts[4]
    assert consent_granted(facts, ["marketing_sms"], T + timedelta(days=3))
    assert not consent_granted(facts, ["marketing_sms", "analytics"], T + timedelta(days=3))
    assert not consent_granted(facts, ["personalization"], T + timedelta(days=3))  # never stated: no consent
    assert consent_granted(facts, [], T)


def test_an_outflow_declares_one_purpose_or_every_marketing_one():
    assert marketing_purposes(PURPOSES) == MARKETING
    assert declared_purposes("marketing", PURPOSES) == MARKETING
    assert declared_purposes("analytics", PURPOSES) == ("analytics",)
    assert declared_purposes("marketing_fax", PURPOSES) is None
    assert declared_purposes("", PURPOSES) is None
