"""The built-in alert rules (README, Operations), made after every ``migrate`` (a
``post_migrate`` receiver, as the roles are): each is created once, enabled and without
targets (staff add where each is sent), and never changed afterwards, so staff edits stay. Turn
one off rather than delete it: a deleted one comes back with the next ``migrate``."""

from ops.models import AlertRule

#: The day against the mean of the 28 before it (``ops.conditions.kpi_drop``).
KPI_DROP_PARAMS = {
    "kpis": ["online_to_store", "repurchase_90", "sales"],
    "drop": 0.2,
    "period": "day",
    "baseline": 28,
}

#: key, name, level, condition, params, window (minutes), enabled
RULES = [
    ("pipeline-backlog", "Pipeline backlog too old", "red", "backlog_age", {"minutes": 5}, 5, True),
    ("services-unreachable", "Database or broker unreachable", "red", "services_unreachable", {}, 1, True),
    ("parked-work", "Parked events or members", "red", "parked", {"threshold": 0}, 60, True),
    ("staff-burst", "Views or exports burst by one staff user (possible leak)", "red", "staff_burst",
     {"entries": 100, "members": 1000}, 60, True),
    ("kpi-drop", "KPI down against its trailing baseline", "yellow", "kpi_drop", KPI_DROP_PARAMS, 1440, True),
    ("silent-tills", "A store's tills silent during opening hours", "yellow", "silent_tills",
     {"open": "10:00", "close": "22:00"}, 60, True),
    ("rejected-share", "A source's rejected share above threshold", "yellow", "rejected_share",
     {"share": 0.05, "min_events": 100}, 60, True),
    ("webhook-off", "A segment webhook turned off", "blue", "webhook_off", {}, 60, True),
    ("segment-failing", "A segment rule failing", "blue", "segment_failing", {}, 60, True),
    ("retention-behind", "Retention jobs behind", "blue", "retention_behind", {"hours": 26}, 60, True),
    ("table-size", "Table or database size approaching its limit", "blue", "table_size",
     {"share": 0.8, "table_bytes": 200 * 2**30, "database_bytes": 1000 * 2**30}, 60, True),
]  # fmt: skip


def builtin_rules_ensure(**kwargs: object) -> None:
    for key, name, level, condition, params, window, enabled in RULES:
        AlertRule.objects.get_or_create(
            key=key,
            defaults={"name": name, "level": level, "condition": condition, "params": params,
                      "window_minutes": window, "enabled": enabled, "built_in": True},
        )  # fmt: skip
