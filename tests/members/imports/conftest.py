"""The console's browser fixtures (Chromium, the screenshots folder), shared with the import page's test."""

from tests.members.test_console_browser import browser, screenshots  # noqa: F401
