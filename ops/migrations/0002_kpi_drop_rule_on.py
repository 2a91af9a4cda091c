"""The built-in KPI drop rule waited, off, for an app to register its condition; ``kpi_drop`` is
now built in (``ops.conditions``). The rule is turned on with the condition's parameters where it
is still as ``migrate`` made it: a rule staff changed is left as they set it."""

from django.db import migrations

WAITING = {"kpis": ["conversion", "repurchase", "sales"], "drop": 0.2}
PARAMS = {"kpis": ["online_to_store", "repurchase_90", "sales"], "drop": 0.2, "period": "day", "baseline": 28}


def kpi_drop_rule_on(apps, schema_editor):
    AlertRule = apps.get_model("ops", "AlertRule")
    for rule in AlertRule.objects.filter(key="kpi-drop", built_in=True, condition="kpi_drop", enabled=False):
        if rule.params == WAITING:
            rule.params, rule.enabled = PARAMS, True
            rule.save(update_fields=["params", "enabled"])


class Migration(migrations.Migration):
    dependencies = [("ops", "0001_initial")]

    operations = [migrations.RunPython(kpi_drop_rule_on, migrations.RunPython.noop)]
