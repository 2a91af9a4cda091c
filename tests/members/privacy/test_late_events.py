"""What arrives after an erasure: events carrying an erased phone, email or id (in any field, any
written form) are stripped on arrival, or deleted where their source says so, and never make a
member; a new sign-up comes back as a new member only where the policy allows it, and rebuilds
agree with what arrival decided."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.models import ErasureRule, Event
from events.pipeline import events_process_pending
from identity.models import ErasedIdentifier, EventResolution, Identifier, Member
from members.privacy.services import erasure_request, erasure_run
from tests.factories import SourceFactory
from tests.factories.sealed import stored
from tests.members.privacy.person import ok, post

pytestmark = pytest.mark.django_db

PHONE, EMAIL = "+8613911112222", "wang.fang@example.com"


def at(minutes_ago: float) -> str:
    return (timezone.now() - timedelta(minutes=minutes_ago)).isoformat()


@pytest.fixture
def wang() -> dict:
    """Wang Fang: an app user (user id, phone, email, name) with an order; then erased."""
    app = SourceFactory(kind="app", name="App")
    web = SourceFactory(kind="web", name="Web", erasure=ErasureRule.DELETE)
    ok(post(app, "identify", {"userId": "u-wang", "messageId": "w-1", "timestamp": at(600),
                              "traits": {"phone": "139 1111 2222", "email": EMAIL, "name": "Wang Fang"}}))  # fmt: skip
    ok(post(app, "track", {"userId": "u-wang", "messageId": "w-2", "event": "Order Completed", "timestamp": at(590),
                           "properties": {"order_id": "A-1", "total": 50, "currency": "CNY"}}))  # fmt: skip
    events_process_pending()
    member = EventResolution.objects.get(event__message_id="w-1").member_id
    request = erasure_request(
        member_id=member, user=staff_user_ensure(username="officer", role=Role.PRIVACY_OFFICER)
    )
    erasure_run(request_id=request.pk)
    return {"member": member, "app": app, "web": web}


def resolved(message_id: str) -> int | None:
    return (
        EventResolution.objects.filter(event__message_id=message_id)
        .values_list("member_id", flat=True)
        .first()
    )


def test_an_erased_value_in_any_field_and_spelling_strips_the_event(wang):
    app = wang["app"]
    ok(
        post(
            app,
            "track",
            {"userId": "13911112222", "messageId": "l-1", "event": "Product Viewed", "timestamp": at(5)},
        )
    )
    ok(post(app, "track", {"anonymousId": "fresh-install", "messageId": "l-2", "event": "Product Viewed",
                           "timestamp": at(4), "context": {"externalIds": [{"type": "crm_id", "id": "WANG.FANG@EXAMPLE.COM"}]}}))  # fmt: skip
    ok(post(app, "identify", {"userId": "u-wang", "messageId": "l-3", "timestamp": at(3)}))
    ok(post(app, "track", {"anonymousId": "someone-else", "messageId": "l-4", "event": "Product Viewed",
                           "timestamp": at(2), "properties": {"product_id": "TEA-1"}}))  # fmt: skip

    events_process_pending()

    for message_id in ("l-1", "l-2", "l-3"):
        event = Event.objects.get(message_id=message_id)
        assert (event.user_id, event.anonymous_id, event.context.get("externalIds")) == ("", "", None)
        assert event.context["cdp"] == {"erased": True}
        assert resolved(message_id) is None
    assert resolved("l-4") is not None  # somebody else entirely
    assert not Identifier.objects.filter(
        value__in=["13911112222", stored("phone", "+8613911112222"), "u-wang", "fresh-install"]
    ).exists()
    assert Member.objects.get(pk=wang["member"]).status == Member.Status.ERASED


def test_a_late_event_from_a_source_that_deletes_is_deleted(wang):
    ok(post(wang["web"], "track", {"userId": "u-wang", "messageId": "web-9", "event": "Order Completed",
                                   "timestamp": at(5), "properties": {"order_id": "W-9", "total": 10, "currency": "CNY",
                                                                      "email": EMAIL}}))  # fmt: skip
    assert Event.objects.filter(message_id="web-9").exists()  # stored raw on arrival ...

    events_process_pending()

    assert not Event.objects.filter(message_id="web-9").exists()  # ... and gone before anything read it


def test_without_the_policy_a_sign_up_is_stripped_too(wang):
    ok(post(wang["app"], "track", {"userId": "u-wang-2", "messageId": "s-1", "event": "Signed Up", "timestamp": at(5),
                                   "context": {"traits": {"email": EMAIL}}}))  # fmt: skip
    events_process_pending()

    assert resolved("s-1") is None
    assert ErasedIdentifier.objects.filter(released_from__isnull=False).count() == 0


def test_with_the_policy_a_new_sign_up_starts_a_new_member_and_a_rebuild_agrees(wang, settings):
    settings.PRIVACY_ALLOW_SIGNUP_AFTER_ERASURE = True
    app = wang["app"]
    ok(post(app, "track", {"userId": "u-wang-2", "messageId": "s-1", "event": "Signed Up", "timestamp": at(10),
                           "context": {"traits": {"email": EMAIL}}}))  # fmt: skip
    ok(post(app, "identify", {"userId": "u-wang-2", "messageId": "s-2", "timestamp": at(5),
                              "traits": {"email": EMAIL, "name": "Wang Fang"}}))  # fmt: skip
    # Late, and from before the sign-up: still the erased person's.
    ok(post(app, "track", {"userId": "x-1", "messageId": "s-0", "event": "Product Viewed", "timestamp": at(20),
                           "context": {"traits": {"email": EMAIL}}}))  # fmt: skip
    events_process_pending()

    new = resolved("s-1")
    assert new is not None
    assert new != wang["member"]
    assert resolved("s-2") == new
    assert resolved("s-0") is None
    assert Identifier.objects.get(type="email", value=stored("email", EMAIL)).member_id == new
    assert Member.objects.get(pk=wang["member"]).status == Member.Status.ERASED

    call_command("rebuild_identity", verbosity=0)

    assert (resolved("s-1"), resolved("s-2"), resolved("s-0")) == (new, new, None)
    assert Identifier.objects.get(type="email", value=stored("email", EMAIL)).member_id == new
    assert Member.objects.get(pk=wang["member"]).status == Member.Status.ERASED
    assert not Identifier.objects.filter(
        value__in=[PHONE, stored("phone", PHONE)]
    ).exists()  # never stated again: still gone
