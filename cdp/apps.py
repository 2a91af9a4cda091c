from django.apps import AppConfig
from django.core.signals import request_finished
from django.db.models.signals import post_migrate


class CdpConfig(AppConfig):
    name = "cdp"
    verbose_name = "Platform"

    def ready(self) -> None:
        import cdp.schema  # noqa: F401 - registers the OpenAPI description of staff tokens
        from cdp.roles import roles_sync
        from cdp.tracing import request_id_clear

        # After every app's permissions exist (they are created by post_migrate too).
        post_migrate.connect(roles_sync, dispatch_uid="cdp.roles_sync")
        # The request id lives until the response is closed, after Django logged its status.
        request_finished.connect(request_id_clear, dispatch_uid="cdp.request_id_clear")
