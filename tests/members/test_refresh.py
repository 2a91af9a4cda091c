"""The member refresh after resolution: its own transactions, marks that are never lost, and
two refreshes of one member that wait for each other instead of colliding."""

import threading

import pytest
from django.db import connection

from events.pipeline import events_process_pending
from identity.models import EventResolution
from members import services
from members.models import DirtyMark, MemberTrait
from tests.factories import EventFactory
from tests.factories.sealed import opened

pytestmark = pytest.mark.django_db(transaction=True)


def a_member(name: str = "Li", user_id: str = "u1") -> int:
    event = EventFactory.create(type="identify", user_id=user_id, traits={"name": name})
    events_process_pending()
    return EventResolution.objects.get(event=event).member_id


class HeldRefresh:
    """A refresh on another connection, stopped inside its transaction until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        recompute = services.members_update

        def held(member_ids: set[int], *rest: set[int]) -> None:
            recompute(member_ids, *rest)
            if threading.current_thread() is self.thread:
                self.inside.set()
                self.release.wait(10)

        monkeypatch.setattr(services, "members_update", held)
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.refreshed = services.members_refresh_batch()
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> "HeldRefresh":
        self.thread.start()
        assert self.inside.wait(10), "the refresh never started"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)
        assert not self.errors


def test_resolution_leaves_no_mark_behind_once_the_follow_ups_ran():
    member = a_member()

    assert not DirtyMark.objects.exists()
    assert {
        k: opened(k, v) for k, v in MemberTrait.objects.filter(member_id=member).values_list("key", "value")
    } == {"name": "Li"}


def test_a_mark_made_during_a_refresh_is_kept_for_the_next_one(monkeypatch):
    member = a_member()
    DirtyMark.objects.create(member_id=member)

    with HeldRefresh(monkeypatch):
        later = DirtyMark.objects.create(member_id=member)  # resolution does not wait

    assert list(DirtyMark.objects.values_list("id", flat=True)) == [later.id]
    assert services.members_refresh_batch() == 1
    assert not DirtyMark.objects.exists()


def test_two_refreshes_of_one_member_wait_for_each_other(monkeypatch):
    member = a_member("Li")
    DirtyMark.objects.create(member_id=member)
    second_done = threading.Event()

    with HeldRefresh(monkeypatch):
        DirtyMark.objects.create(member_id=member)
        EventFactory(type="identify", user_id="u1", traits={"name": "Li Lei"})
        # The new event is resolved (its mark too) without running the follow-ups.
        monkeypatch.setattr("events.pipeline.pipeline_follow_ups", lambda: [])
        events_process_pending()

        def second() -> None:
            try:
                services.members_refresh_batch()
            finally:
                connection.close()
                second_done.set()

        threading.Thread(target=second).start()
        assert not second_done.wait(0.5), "the second refresh did not wait for the first"

    assert second_done.wait(10)
    assert not DirtyMark.objects.exists()
    assert opened("name", MemberTrait.objects.get(member_id=member, key="name").value) == "Li Lei"


def test_a_refresh_leaves_a_member_another_refresh_holds_for_later_and_goes_on(monkeypatch):
    """Waiting for the other refresh's whole transaction would hold up every other member of
    the batch; the held member's mark stays queued for the next batch instead."""
    held, free = a_member("Li"), a_member("Wang", user_id="u2")
    DirtyMark.objects.create(member_id=held)

    with HeldRefresh(monkeypatch):
        later = DirtyMark.objects.create(member_id=held)
        DirtyMark.objects.create(member_id=free)
        refreshed = []

        def second_refresh() -> None:
            try:
                refreshed.append(services.members_refresh_batch())
            finally:
                connection.close()

        second = threading.Thread(target=second_refresh)
        second.start()
        second.join(5)
        assert not second.is_alive(), "the refresh waited for the member another refresh holds"
        assert refreshed == [1]

    assert list(DirtyMark.objects.values_list("id", flat=True)) == [later.id]
    assert services.members_refresh_batch() == 1
    assert not DirtyMark.objects.exists()
