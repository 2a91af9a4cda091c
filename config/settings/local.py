"""Local development: `make run`. Safe defaults so a fresh clone runs with no configuration."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "local-development-only-not-a-secret")
os.environ.setdefault("DJANGO_DEBUG", "true")

from config.settings.base import *  # noqa: F403
