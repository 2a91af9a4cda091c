"""Local development: `make run`. Safe defaults so a fresh clone runs with no configuration."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "local-development-only-not-a-secret")
os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true")  # receivers on this machine

from config.settings.base import *  # noqa: F403
