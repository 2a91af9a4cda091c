from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MembersConfig(AppConfig):
    name = "members"

    def ready(self) -> None:
        from members.segments.builtins import builtins_install

        # Once per migrate, when the members tables are up to date: the computed tags and
        # the built-in segments.
        post_migrate.connect(builtins_install, sender=self, dispatch_uid="members.builtins_install")
