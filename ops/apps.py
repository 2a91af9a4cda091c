from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: alert rules over the platform's metrics and state, alerts and their
    notifications. The top layer: it reads every app (through their selectors), none reads it."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "ops"
    verbose_name = "Operations"
