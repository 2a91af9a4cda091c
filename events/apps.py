from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        from events.models import Source
        from events.selectors import source_names_forget

        post_save.connect(source_names_forget, sender=Source, dispatch_uid="events.source_names_forget")
        post_delete.connect(source_names_forget, sender=Source, dispatch_uid="events.source_names_forget_d")
