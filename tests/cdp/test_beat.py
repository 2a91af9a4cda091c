"""The beat schedule: every periodic task exists and cannot pile up after an outage."""

from celery.schedules import crontab

from config.celery import _beat_schedule, app


def test_every_scheduled_task_is_registered_and_expires():
    app.loader.import_default_modules()
    schedule = _beat_schedule()

    assert {entry["task"] for entry in schedule.values()} <= set(app.tasks)
    for entry in schedule.values():
        interval = entry["schedule"]
        limit = 3600 if isinstance(interval, crontab) else interval
        assert 0 < entry["options"]["expires"] <= limit


def test_the_nightly_recompute_runs_at_the_configured_time(settings):
    settings.SEGMENTS_NIGHTLY_AT = "02:15"

    nightly = _beat_schedule()["segments-nightly"]["schedule"]

    assert (nightly.hour, nightly.minute) == ({2}, {15})
