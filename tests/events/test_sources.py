"""Sources and their write keys: the command, the staff API and the admin."""

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.models import Channel, RejectedEvent, Source
from events.selectors import source_for_write_key
from events.services import source_create, source_rotate_key
from tests.factories import SourceFactory, StaffTokenFactory

pytestmark = pytest.mark.django_db


def test_create_source_prints_the_write_key_last_and_stores_only_its_hash():
    out = StringIO()

    call_command("create_source", "Store S001 POS", "--kind", "pos", "--store", "S001", stdout=out)

    write_key = out.getvalue().strip().splitlines()[-1]
    source = Source.objects.get(name="Store S001 POS")
    assert (source.kind, source.store_code) == (Channel.POS, "S001")
    assert write_key.startswith("wk_")
    assert write_key not in source.write_key_hash
    assert source_for_write_key(write_key) == source


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "pos"], "store code"),
        (["--kind", "app", "--store", "S001"], "store code"),
    ],
)
def test_create_source_refuses_inconsistent_store_codes(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_source", "X", *args, stdout=StringIO())


def test_create_source_refuses_a_taken_name():
    SourceFactory(name="App")

    with pytest.raises(CommandError, match="already exists"):
        call_command("create_source", "App", "--kind", "app", stdout=StringIO())


def test_rotating_a_key_retires_the_old_one():
    created = source_create(name="Mini", kind=Channel.MINI_PROGRAM)

    rotated = source_rotate_key(source=created.source)

    assert source_for_write_key(created.write_key) is None
    assert source_for_write_key(rotated.write_key) == created.source


@pytest.fixture
def admin_client():
    token = StaffTokenFactory(user=staff_user_ensure(username="ops", role=Role.ADMIN))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.secret}")
    return client


def test_staff_api_creates_a_source_and_shows_its_key_once(admin_client):
    response = admin_client.post("/api/v1/sources/", {"name": "S002", "kind": "pos", "store_code": "S002"})

    assert response.status_code == 201
    key = response.json()["write_key"]
    assert source_for_write_key(key).name == "S002"
    listed = admin_client.get("/api/v1/sources/").json()["results"]
    assert [item["name"] for item in listed] == ["S002"]
    assert "write_key" not in listed[0]
    assert listed[0]["write_key_prefix"] == key[:10]


def test_staff_api_refuses_a_taken_name(admin_client):
    SourceFactory(name="App")

    response = admin_client.post("/api/v1/sources/", {"name": "App", "kind": "app"}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "name", "reason": "Source with this Name already exists."}]


def test_a_name_taken_between_check_and_insert_is_a_validation_error(monkeypatch):
    SourceFactory(name="App")
    monkeypatch.setattr(Source, "full_clean", lambda self: None)  # lose the race on purpose

    with pytest.raises(ValidationError) as refused:
        source_create(name="App", kind=Channel.APP)

    assert refused.value.message_dict == {"name": ["A source with this name already exists."]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "S", "kind": "pos"}, "store_code"),
        ({"name": "S", "kind": "kiosk"}, "kind"),
        ({"kind": "web"}, "name"),
    ],
)
def test_staff_api_explains_invalid_sources(admin_client, body, field):
    response = admin_client.post("/api/v1/sources/", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_staff_api_disables_enables_and_rotates(admin_client):
    source = SourceFactory()

    assert admin_client.post(f"/api/v1/sources/{source.pk}/disable/").json()["enabled"] is False
    assert source_for_write_key(source.write_key) is None
    assert admin_client.post(f"/api/v1/sources/{source.pk}/enable/").json()["enabled"] is True
    new_key = admin_client.post(f"/api/v1/sources/{source.pk}/rotate-key/").json()["write_key"]
    assert source_for_write_key(source.write_key) is None
    assert source_for_write_key(new_key) == source
    assert admin_client.post("/api/v1/sources/999999/disable/").status_code == 404


def test_staff_api_lists_rejected_events_newest_first(admin_client, ingest, source):
    ingest("track", {"event": "no ids"})
    ingest("batch", {"batch": [{"type": "identify"}]})

    response = admin_client.get(f"/api/v1/rejected-events/?source={source.pk}")

    assert response.status_code == 200
    rejected = response.json()["results"]
    assert [(r["endpoint"], r["batch_index"]) for r in rejected] == [("batch", 0), ("track", None)]
    assert rejected[0]["errors"] == [{"field": "userId", "reason": "userId or anonymousId is required"}]
    assert admin_client.get("/api/v1/rejected-events/?code=invalid_json").json()["results"] == []
    assert RejectedEvent.objects.count() == 2


@pytest.mark.parametrize("role", [Role.CRM_AGENT, Role.CRM_MANAGER, Role.MARKETING])
@pytest.mark.parametrize("path", ["/api/v1/sources/", "/api/v1/rejected-events/"])
def test_source_administration_is_for_admins_only(api_client, role, path):
    token = StaffTokenFactory(user=staff_user_ensure(username=f"u-{role}", role=role))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.secret}")

    response = api_client.get(path)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize("path", ["/api/v1/sources/", "/api/v1/rejected-events/"])
def test_source_administration_needs_credentials(api_client, path):
    response = api_client.get(path)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_write_key_never_works_on_the_staff_api(api_client, source):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {source.write_key}")

    assert api_client.get("/api/v1/sources/").status_code == 401


def test_admin_pages_render(admin_client, client, django_user_model):
    SourceFactory()
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)

    for path in ("/admin/events/source/", "/admin/events/event/", "/admin/events/rejectedevent/"):
        assert client.get(path).status_code == 200, path


def test_a_source_defaults_to_the_platform_currency_and_staff_change_it(admin_client, settings):
    settings.CDP_CURRENCY = "SGD"
    created = admin_client.post("/api/v1/sources/", {"name": "Web", "kind": "web"}, format="json").json()
    assert created["default_currency"] == "SGD"
    chosen = admin_client.post(
        "/api/v1/sources/", {"name": "HK till", "kind": "pos", "store_code": "HK1", "default_currency": "HKD"},
        format="json",
    ).json()  # fmt: skip
    assert chosen["default_currency"] == "HKD"

    response = admin_client.patch(
        f"/api/v1/sources/{created['id']}/", {"default_currency": "CNY"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["default_currency"] == "CNY"
    assert Source.objects.get(pk=created["id"]).default_currency == "CNY"


@pytest.mark.parametrize("currency", ["cny", "RMB¥", "", "CNYX"])
def test_a_default_currency_that_is_not_a_code_is_refused(admin_client, currency):
    source = SourceFactory()

    response = admin_client.patch(
        f"/api/v1/sources/{source.pk}/", {"default_currency": currency}, format="json"
    )

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["default_currency"]
    source.refresh_from_db()
    assert source.default_currency == "CNY"


def test_the_admin_edits_a_sources_default_currency(client):
    source = SourceFactory()
    client.force_login(staff_user_ensure(username="root", role=Role.ADMIN))

    page = client.get(f"/admin/events/source/{source.pk}/change/")
    assert 'name="default_currency"' in page.content.decode()


def test_the_source_for_a_write_key_is_read_whole_in_one_statement(django_assert_num_queries):
    created = source_create(name="S009 POS", kind=Channel.POS, store_code="S009", default_currency="HKD")

    with django_assert_num_queries(1):
        found = source_for_write_key(created.write_key)

    assert found is not None
    assert {field.attname: getattr(found, field.attname) for field in Source._meta.concrete_fields} == {
        field.attname: getattr(created.source, field.attname) for field in Source._meta.concrete_fields
    }
    assert not found._state.adding  # saved as loaded: an update, never a second insert
    assert source_for_write_key("wk_not_a_key") is None
