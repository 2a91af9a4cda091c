from django.apps import AppConfig


class InsightsConfig(AppConfig):
    name = "members.insights"
    label = "insights"
    verbose_name = "Insights"
