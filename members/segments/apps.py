from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SegmentsConfig(AppConfig):
    """Tags and segments: definitions, memberships and their history, exports and webhooks.
    Its tables kept the ``members_`` names they had when segments lived in the members app."""

    name = "members.segments"
    label = "segments"
    verbose_name = "Tags and segments"

    def ready(self) -> None:
        from members.segments.builtins import builtins_install

        # Once per migrate, when the segments tables are up to date: the computed tags and
        # the built-in segments.
        post_migrate.connect(builtins_install, sender=self, dispatch_uid="segments.builtins_install")
