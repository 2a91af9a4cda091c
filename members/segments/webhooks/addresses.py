"""Which IP addresses a webhook may reach (pure: no Django, no network).

Only global unicast addresses. The standard library's ``is_global`` is not enough on its own:
Python 3.11 calls ``::127.0.0.1`` (an IPv4-compatible address), ``64:ff9b::a00:1`` (NAT64 of
10.0.0.1), ``2002:7f00:1::`` (6to4 of 127.0.0.1), ``::ffff:0:7f00:1`` (SIIT) and ``fec0::1``
(site-local) global, and counts ``192.0.0.9`` and ``192.0.0.10`` of the IETF protocol block
global. So:

- IPv4: global, not multicast, and not in ``192.0.0.0/24`` at all.
- IPv6 forms that carry an IPv4 address are judged by the address they carry, since that is
  where the packets end up: IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96`` (an
  IPv6-only host behind DNS64 reaches every IPv4 receiver this way, so a public one passes)
  and 6to4 ``2002::/16``. Forms with no legitimate receiver are refused whole: the deprecated
  IPv4-compatible ``::/96``, SIIT's ``::ffff:0:0:0/96``, local-use NAT64 ``64:ff9b:1::/48``,
  Teredo ``2001::/32`` and site-local ``fec0::/10``.
- Any other IPv6: global and not multicast.
"""

import ipaddress

_IETF_PROTOCOL_ASSIGNMENTS = ipaddress.IPv4Network("192.0.0.0/24")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_REFUSED_V6 = {
    ipaddress.IPv6Network("::/96"): "an IPv4-compatible IPv6 address",
    ipaddress.IPv6Network("::ffff:0:0:0/96"): "an IPv4-translated (SIIT) IPv6 address",
    ipaddress.IPv6Network("64:ff9b:1::/48"): "a local-use NAT64 address",
    ipaddress.IPv6Network("2001::/32"): "a Teredo address",
    ipaddress.IPv6Network("fec0::/10"): "a site-local address",
}


def _v4_refusal(ip: ipaddress.IPv4Address) -> str | None:
    if ip in _IETF_PROTOCOL_ASSIGNMENTS:
        return "in 192.0.0.0/24 (IETF protocol assignments)"
    if ip.is_multicast or not ip.is_global:
        return "not a public address (private, loopback, link-local or reserved)"
    return None


def address_refusal(address: str) -> str | None:
    """Why a webhook may not connect to ``address`` (an IPv4 or IPv6 literal, an IPv6 zone
    allowed), or None when it may. ``ValueError`` when ``address`` is not an IP address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        refusal = _v4_refusal(ip)
        return f"{ip} is {refusal}" if refusal else None
    if ip.is_loopback or ip.is_unspecified:
        return f"{ip} is not a public address (loopback or unspecified)"
    for network, what in _REFUSED_V6.items():
        if ip in network:
            return f"{ip} is {what}"
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        refusal = _v4_refusal(embedded)
        return f"{ip} carries {embedded}, {refusal}" if refusal else None
    if ip.is_multicast or not ip.is_global:
        return f"{ip} is not a public address (private, loopback, link-local or reserved)"
    return None
