"""WSGI entry point (granian or gunicorn: config.wsgi:application)."""

import os

from django.core.wsgi import get_wsgi_application

# Production unless told otherwise, as cookiecutter-django does: a server started without
# DJANGO_SETTINGS_MODULE must never run with DEBUG, a public secret key or loopback webhooks.
# manage.py (and so `make run`, the Procfile) keeps the local settings for development.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()

# A server's worker imports this once it starts (granian's, gunicorn's): freeze what loading left,
# so that the requests' garbage is collected within seconds, not minutes (cdp.workers).
from cdp.workers import web_worker_gc_tune  # noqa: E402 - after Django is set up

web_worker_gc_tune()
