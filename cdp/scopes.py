"""Least privilege by place: staff scoped to stores (directly or through regions) and channels.

A scoped user finds and opens only the members seen within the scope (an event, an order,
with one of its stores and channels), and sees only the orders and timeline rows within it;
bulk pulls across every store (a segment's members, its exports and changes feed, its
webhooks, a campaign issued to a segment) are refused to a scoped user. An unscoped user
sees everything their role allows. Stores narrow by the store code an event or order
carries (a POS source's store); channels by the source's channel.

Where it is held: ``StaffScope`` on the user (stores, regions, channels); an API token may
narrow its user's scope further (``ApiToken.stores`` / ``channels``), never widen it. The
members app applies the scope (``members.selectors``: ``members_in_scope``,
``member_visible``, ``events_in_scope``); views ask ``request_scope`` for it.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest
from rest_framework.request import Request

from cdp.models import ApiToken, StaffScope


@dataclass(frozen=True, slots=True)
class Scope:
    """Stores and channels a user may see; None on a side: every one."""

    stores: frozenset[str] | None = None
    channels: frozenset[str] | None = None

    @property
    def unrestricted(self) -> bool:
        return self.stores is None and self.channels is None

    def allows(self, *, store_code: str, channel: str) -> bool:
        """Whether a row (event, order) of that store and channel is within the scope."""
        return (self.stores is None or store_code in self.stores) and (
            self.channels is None or channel in self.channels
        )

    def narrowed(self, *, stores: frozenset[str] | None, channels: frozenset[str] | None) -> "Scope":
        """This scope, within ``stores`` and ``channels`` too (None: no further limit)."""
        return Scope(_both(self.stores, stores), _both(self.channels, channels))

    def __str__(self) -> str:
        if self.unrestricted:
            return "unscoped"
        parts = []
        if self.stores is not None:
            parts.append("stores " + (", ".join(sorted(self.stores)) or "none"))
        if self.channels is not None:
            parts.append("channels " + (", ".join(sorted(self.channels)) or "none"))
        return "; ".join(parts)


UNSCOPED = Scope()


def _both(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


def staff_scope(user: AbstractBaseUser | AnonymousUser | None, token: ApiToken | None = None) -> Scope:
    """The scope of ``user`` (through ``token``, if the request came with one): at most two
    queries for a scoped user, one for an unscoped one (none through a token)."""
    if user is None or not user.is_authenticated:
        return UNSCOPED
    # None when the user has none (Django's "does not exist" is an AttributeError); no query
    # when the token's user came with it (``StaffTokenAuthentication``).
    row: StaffScope | None = getattr(user, "staff_scope", None)
    scope = UNSCOPED
    if row is not None:
        regions = list(row.regions.all())
        stores = set(row.stores).union(*(region.stores for region in regions))
        has_stores = bool(row.stores) or bool(regions)
        scope = Scope(
            frozenset(stores) if has_stores else None, frozenset(row.channels) if row.channels else None
        )
    if token is not None:
        scope = scope.narrowed(
            stores=frozenset(token.stores) if token.stores else None,
            channels=frozenset(token.channels) if token.channels else None,
        )
    return scope


_CACHED = "_cdp_scope"


def request_scope(request: Request | HttpRequest) -> Scope:
    """The scope of whoever makes the request (read once per request)."""
    cached = getattr(request, _CACHED, None)
    if isinstance(cached, Scope):
        return cached
    auth = getattr(request, "auth", None)  # a DRF request authenticated by a staff token
    scope = staff_scope(request.user, auth if isinstance(auth, ApiToken) else None)
    setattr(request, _CACHED, scope)
    return scope
