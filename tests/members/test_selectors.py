from datetime import UTC, datetime, timedelta

import pytest

from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.selectors import member_resolve
from tests.factories import EventFactory

T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_an_absorbed_id_resolves_to_its_survivor_through_chains_of_merges():
    # Three members, merged into one in two steps: every old id leads to the one survivor.
    firsts = [
        EventFactory(user_id="", anonymous_id=f"a{i}", timestamp=T0 + timedelta(minutes=i)) for i in range(3)
    ]
    events_process_pending()
    ids = [EventResolution.objects.get(event=e).member_id for e in firsts]
    EventFactory(
        user_id="", anonymous_id="a1", context={"device": {"id": "d"}}, timestamp=T0 + timedelta(hours=1)
    )
    events_process_pending()
    EventFactory(
        user_id="", anonymous_id="a2", context={"device": {"id": "d"}}, timestamp=T0 + timedelta(hours=2)
    )
    EventFactory(
        user_id="", anonymous_id="a0", context={"device": {"id": "d"}}, timestamp=T0 + timedelta(hours=3)
    )
    events_process_pending()

    survivors = {member_resolve(member_id=pk) for pk in ids}

    assert len(survivors) == 1
    assert survivors.pop().pk == ids[0]
    assert member_resolve(member_id=999_999_999) is None
