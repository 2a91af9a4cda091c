from django.apps import AppConfig
from django.core.signals import request_finished
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save


class CdpConfig(AppConfig):
    name = "cdp"
    verbose_name = "Platform"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group, Permission

        import cdp.schema  # noqa: F401 - registers the OpenAPI description of staff tokens
        from cdp.models import ApiToken, Region, StaffScope
        from cdp.roles import roles_sync
        from cdp.staff_tokens import staff_tokens_changed
        from cdp.tracing import request_id_clear

        # After every app's permissions exist (they are created by post_migrate too).
        post_migrate.connect(roles_sync, dispatch_uid="cdp.roles_sync")
        # The request id lives until the response is closed, after Django logged its status.
        request_finished.connect(request_id_clear, dispatch_uid="cdp.request_id_clear")
        # What a staff token stands for, kept per process (cdp.staff_tokens): any change to it
        # makes every process read tokens again.
        user_model = get_user_model()
        for model in (ApiToken, user_model, Group, Permission, StaffScope, Region):
            for signal in (post_save, post_delete):
                signal.connect(
                    staff_tokens_changed, sender=model, dispatch_uid=f"cdp.staff_tokens.{signal}.{model}"
                )
        for through in (
            user_model.groups.through,
            user_model.user_permissions.through,
            Group.permissions.through,
            StaffScope.regions.through,
        ):
            m2m_changed.connect(
                staff_tokens_changed, sender=through, dispatch_uid=f"cdp.staff_tokens.{through}"
            )
