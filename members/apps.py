from django.apps import AppConfig


class MembersConfig(AppConfig):
    name = "members"

    def ready(self) -> None:
        # Registers the refresh task under its name, which ``members.marks`` nudges by name.
        from members import tasks  # noqa: F401
