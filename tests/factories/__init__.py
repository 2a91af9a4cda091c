"""factory-boy factories, one module per app."""

from tests.factories.cdp import StaffTokenFactory, UserFactory
from tests.factories.events import EventFactory, SourceFactory, TrackMessageFactory

__all__ = ("EventFactory", "SourceFactory", "StaffTokenFactory", "TrackMessageFactory", "UserFactory")
