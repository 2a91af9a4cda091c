"""identity → members is a queue: identity writes "these members changed" into its own outbox,
members takes it into its refresh queue and refreshes with tasks of its own."""

from collections import Counter

import pytest
from django.db import connection, transaction
from django.test import override_settings

from cdp import db
from events.models import Event, PendingEvent
from identity.models import EventResolution, MemberChange
from identity.services import identity_resolve_events
from members import marks
from members.models import DirtyMark, MemberTrait
from members.services import members_refresh_batch
from members.tasks import refresh_pending
from tests.factories import EventFactory
from tests.factories.sealed import opened

pytestmark = pytest.mark.django_db


def resolved(*events: Event) -> list[int]:
    """Resolve these events the way the pipeline's stage does, without its follow-ups; their
    members' ids."""
    PendingEvent.objects.all().delete()
    with transaction.atomic():
        identity_resolve_events(events)
    return [EventResolution.objects.get(event=event).member_id for event in events]


def test_resolution_writes_identitys_outbox_and_no_members_table():
    li, wang = resolved(
        EventFactory.create(type="identify", user_id="li", traits={"name": "Li"}),
        EventFactory.create(type="identify", user_id="wang", traits={"name": "Wang"}),
    )

    assert sorted(MemberChange.objects.values_list("member_id", flat=True)) == sorted([li, wang])
    assert not DirtyMark.objects.exists()
    assert not MemberTrait.objects.exists()


def test_the_refresh_takes_identitys_changes_into_its_own_queue_and_refreshes_them():
    (li,) = resolved(EventFactory.create(type="identify", user_id="li", traits={"name": "Li"}))
    (again,) = resolved(EventFactory.create(type="identify", user_id="li", traits={"name": "Li Na"}))
    assert again == li
    assert MemberChange.objects.filter(member_id=li).count() == 2

    assert members_refresh_batch() == 1  # two changes, one refresh

    assert not MemberChange.objects.exists()
    assert not DirtyMark.objects.exists()
    assert opened("name", MemberTrait.objects.get(member_id=li, key="name").value) == "Li Na"


def test_the_members_task_refreshes_without_the_events_pipeline():
    (li,) = resolved(EventFactory.create(type="identify", user_id="li", traits={"name": "Li"}))

    assert refresh_pending() == 1

    assert opened("name", MemberTrait.objects.get(member_id=li, key="name").value) == "Li"
    assert not MemberChange.objects.exists()


def test_changes_are_handed_over_in_batches_and_each_member_marked_once_per_batch():
    (li,) = resolved(EventFactory.create(type="identify", user_id="li"))
    (wang,) = resolved(EventFactory.create(type="identify", user_id="wang"))
    resolved(EventFactory.create(type="identify", user_id="li"))

    assert marks.member_changes_accept(batch_size=2) == 3

    # [li, wang] in the first batch, [li] in the second: the batches are not merged
    assert sorted(DirtyMark.objects.values_list("member_id", flat=True)) == sorted([li, li, wang])
    assert not MemberChange.objects.exists()


def test_a_handover_that_fails_leaves_the_changes_with_identity(monkeypatch):
    (li,) = resolved(EventFactory.create(type="identify", user_id="li"))

    def worker_dies(**kwargs: object) -> int:
        raise RuntimeError("the worker died")

    monkeypatch.setattr(marks, "members_mark_dirty", worker_dies)
    with pytest.raises(RuntimeError):
        marks.member_changes_accept()

    assert list(MemberChange.objects.values_list("member_id", flat=True)) == [li]
    assert not DirtyMark.objects.exists()


def test_marking_unless_marked_skips_members_already_waiting():
    (li,) = resolved(EventFactory.create(type="identify", user_id="li"))
    (wang,) = resolved(EventFactory.create(type="identify", user_id="wang"))
    marks.members_mark_dirty(member_ids=[li])

    assert marks.members_mark_dirty(member_ids=[li, wang, wang], unless_marked=True) == 1
    assert marks.members_mark_dirty(member_ids=[li]) == 1  # a change needs a mark of its own

    assert sorted(DirtyMark.objects.values_list("member_id", flat=True)) == sorted([li, li, wang])


def _vacuums(*tables: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, vacuum_count FROM pg_stat_user_tables WHERE relname = ANY(%s)", [list(tables)]
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
@override_settings(MEMBER_REFRESH_QUEUE_VACUUM_EVERY=2)
def test_the_refresh_vacuums_its_queues_after_every_so_many_rows_it_took(monkeypatch):
    """Both queues are emptied from their oldest end (identity's outbox, the dirty marks): a
    worker vacuums them now and then, so a take does not walk the dead index entries of every
    row taken before it, where autovacuum is late or off."""
    monkeypatch.setattr(db, "_taken_since_vacuum", Counter())
    queues = (MemberChange._meta.db_table, DirtyMark._meta.db_table)
    resolved(EventFactory.create(type="identify", user_id="li", traits={"name": "Li"}))
    before = _vacuums(*queues)

    assert members_refresh_batch() == 1
    assert _vacuums(*queues) == before  # one row taken from each: not yet

    resolved(
        EventFactory.create(type="identify", user_id="wang", traits={"name": "Wang"}),
        EventFactory.create(type="identify", user_id="zhang", traits={"name": "Zhang"}),
    )
    assert members_refresh_batch() == 2
    after = _vacuums(*queues)
    assert after == {table: count + 1 for table, count in before.items()}  # 3 taken: vacuumed
    assert members_refresh_batch() == 0
    assert _vacuums(*queues) == after  # counting again from 0
