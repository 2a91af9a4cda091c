"""WSGI entry point (gunicorn config.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

# Production unless told otherwise, as cookiecutter-django does: a server started without
# DJANGO_SETTINGS_MODULE must never run with DEBUG, a public secret key or loopback webhooks.
# manage.py (and so `make run`, the Procfile) keeps the local settings for development.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()
