"""A list's cursor that the list never gave is a 400 naming ``cursor``: DRF's own pagination
answers 404 to an unreadable one (as if something were missing) and 500 to one whose position is
not a value of the list's ordering field. Schemathesis found the first; the second is a cursor
forged by hand (base64 of ``p=abc``)."""

import base64

import pytest

from cdp.roles import Role
from tests.members.test_api import staff_client

LISTS = ["/api/v1/sources/", "/api/v1/rejected-events/", "/api/v1/segments/", "/api/v1/tags/"]


def forged(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "cursor"), [
    *((path, cursor) for path in LISTS for cursor in ("garbage", "e%E7%A8%93%C2%A2", forged("o=-5"), forged("p=%00"))),
    ("/api/v1/sources/", forged("p=abc")), ("/api/v1/rejected-events/", forged("p=1.5")),
    ("/api/v1/parked-events/", forged("p=x")), ("/api/v1/parked-members/", forged("p=")),
])  # fmt: skip
def test_a_cursor_the_list_never_gave_is_a_400_naming_it(path, cursor):
    answer = staff_client(Role.ADMIN).get(path, {"cursor": cursor})

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "invalid"
    assert [error["field"] for error in answer.json()["errors"]] == ["cursor"]


@pytest.mark.django_db
def test_a_cursor_the_list_gave_still_pages():
    client = staff_client(Role.ADMIN)
    first = client.get("/api/v1/segments/", {"page_size": 2}).json()

    second = client.get("/api/v1/segments/", {"page_size": 2, "cursor": first["next_cursor"]})

    assert second.status_code == 200
    assert {s["key"] for s in second.json()["results"]}.isdisjoint(s["key"] for s in first["results"])
