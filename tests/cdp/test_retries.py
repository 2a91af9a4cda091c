"""Which database errors are transient (retried, never parked) and which are about the data
(parked), told from the errors PostgreSQL and psycopg really raise."""

from collections.abc import Callable

import pytest
from django.db import connection, transaction
from django.db.utils import OperationalError

from cdp import retries
from cdp.retries import database_error_is_transient, transient_retry


def raised_by(sql: str) -> Exception:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    except Exception as exc:  # the error is what the test looks at
        return exc
    raise AssertionError(f"{sql} did not fail")


def raised_with(sqlstate: str) -> Exception:
    return raised_by(f"DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{sqlstate}'; END $$")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("40P01", True),  # deadlock detected
        ("40001", True),  # serialization failure
        ("08006", True),  # connection failure
        ("57P01", True),  # admin shutdown (a restart)
        ("53300", True),  # too many connections
        ("55P03", True),  # lock not available
        ("22003", False),  # numeric value out of range
        ("22008", False),  # datetime field overflow
        ("23505", False),  # unique violation
        ("57014", False),  # query cancelled (a statement timeout: may be the data's doing)
        ("P0001", False),  # raise_exception: a trigger refusing a value
    ],
)
def test_transient_errors_by_sqlstate(sqlstate, transient):
    assert database_error_is_transient(raised_with(sqlstate)) is transient


@pytest.mark.django_db
def test_data_errors_and_python_errors_are_not_transient():
    assert not database_error_is_transient(raised_by("SELECT 1 / 0"))
    assert not database_error_is_transient(raised_by("SELECT 2147483648::int"))
    assert not database_error_is_transient(ValueError("bad total"))
    assert not database_error_is_transient(OverflowError("date value out of range"))


@pytest.mark.django_db
def test_transient_retry_tries_again_then_gives_up(monkeypatch):
    monkeypatch.setattr(retries, "_BACKOFF_BASE_SECONDS", 0.001)
    calls: list[int] = []

    def failing(times: int, error: Exception) -> Callable[[], str]:
        def work() -> str:
            calls.append(1)
            if len(calls) <= times:
                raise error
            return "done"

        return work

    assert transient_retry(failing(2, raised_with("40P01"))) == "done"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(OperationalError, match="simulated"):
        transient_retry(failing(10, raised_with("40001")), tries=4)
    assert len(calls) == 4

    calls.clear()
    with pytest.raises(ValueError, match="bad"):
        transient_retry(failing(10, ValueError("bad")))
    assert len(calls) == 1  # never retried: it would fail the same way
