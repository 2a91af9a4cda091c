"""Fixtures of the shared kernel's tests: the members app's member built through the pipeline."""

from tests.members.conftest import zhang  # noqa: F401 - a fixture, used here too
