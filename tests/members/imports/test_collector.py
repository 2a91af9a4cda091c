"""An import's bulk work runs with the process's own objects frozen
(``cdp.workers.process_objects_frozen``): the collector's full collections, which the job's
garbage triggers, skip them; they are unfrozen after, and a freeze that is not the import's is
left as it was."""

import gc

import pytest

from cdp.workers import process_objects_frozen
from members.imports import services
from members.models import MemberAggregate
from tests.members.imports.helpers import csv_file, run_import

MEMBERS = [{"member_id": "M1", "phone": "13800138000", "registered_at": "2021-03-04 10:00:00"}]
ORDERS = [
    {
        "order_id": "O1",
        "member_id": "M1",
        "channel": "web",
        "total": "88",
        "completed_at": "2023-05-01 12:00:00",
    }
]


def _spied(monkeypatch, name: str, seen: list[tuple[str, int]]) -> None:
    """``services.<name>`` noting how many objects are frozen whenever it is called."""
    real = getattr(services, name)

    def spy(*args, **kwargs):
        seen.append((name, gc.get_freeze_count()))
        return real(*args, **kwargs)

    monkeypatch.setattr(services, name, spy)


@pytest.mark.django_db
def test_an_import_and_its_resolution_run_with_the_process_objects_frozen(tmp_path, monkeypatch):
    assert gc.get_freeze_count() == 0
    seen: list[tuple[str, int]] = []
    # The backlog a member at a time: resolution and refresh together (``pipeline_drain_beside``).
    for name in ("events_ingest", "imported_identities_resolve", "pipeline_drain_beside"):
        _spied(monkeypatch, name, seen)
    run_import("members", csv_file(tmp_path / "members.csv", MEMBERS))
    run_import("orders", csv_file(tmp_path / "orders.csv", ORDERS))
    assert gc.get_freeze_count() == 0  # unfrozen after each job
    services.imported_resolve(processes=1)
    assert gc.get_freeze_count() == 0
    assert [name for name, _ in seen] == [
        "events_ingest", "events_ingest", "pipeline_drain_beside", "imported_identities_resolve"
    ]  # fmt: skip
    assert all(frozen > 0 for _, frozen in seen), seen
    assert MemberAggregate.objects.get().orders == 1  # the same outcome


def test_a_freeze_that_is_not_the_blocks_is_left_as_it_was():
    # Counts, not equality: a frozen object that dies leaves the frozen generation (another
    # thread's, say), so the count only ever falls while nothing freezes; a block that froze
    # again would add what was made since (its own generator at least), one that unfroze, 0.
    assert gc.get_freeze_count() == 0
    with process_objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with process_objects_frozen():  # nested: the outer block's freeze
            assert 0 < gc.get_freeze_count() <= frozen
        assert 0 < gc.get_freeze_count() <= frozen
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a process that froze its start-up objects
    try:
        owned = gc.get_freeze_count()
        with process_objects_frozen():
            pass
        assert 0 < gc.get_freeze_count() <= owned
    finally:
        gc.unfreeze()
