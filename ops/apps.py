from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OpsConfig(AppConfig):
    """Operations: alert rules over the platform's metrics and state, alerts and their
    notifications. The top layer: it reads every app (through their selectors), none reads it."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from ops.builtins import builtin_rules_ensure  # its models need the app registry ready

        post_migrate.connect(builtin_rules_ensure, sender=self, dispatch_uid="ops.builtin_rules_ensure")
