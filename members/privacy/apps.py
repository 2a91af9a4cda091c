from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "members.privacy"
    label = "privacy"
    verbose_name = "Personal data"
