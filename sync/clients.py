"""Who a request comes from: the socket's peer address, or, when that peer is a reverse proxy named in
`[http] trusted_proxies`, the client address the proxy forwarded (X-Forwarded-For, else X-Real-IP).

Per-client limits (connections, page streams, the /q/ rate limit) are keyed by this address. Forwarded
headers are believed only from a trusted proxy: anyone else could send any address and dodge every limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR ranges ("127.0.0.1", "10.0.0.0/8", "::1"); ValueError names a bad one."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR range (e.g. \"127.0.0.1\" or "
                             "\"10.0.0.0/8\")") from None
    return tuple(out)


class TrustedProxies:
    """The reverse proxies whose forwarding headers are believed; `addr in trusted` for a peer address."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks = parse_networks(entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, addr: object) -> bool:
        if not self.networks or not isinstance(addr, str):
            return False
        ip = _ip(addr)
        return ip is not None and any(ip in net for net in self.networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(environ: Mapping[str, Any], trusted: TrustedProxies) -> str:
    """The client's address for a WSGI request: REMOTE_ADDR unless it is a trusted proxy, then the
    right-most untrusted address of X-Forwarded-For (each proxy appends the address it saw), else
    X-Real-IP, else the proxy itself."""
    peer = str(environ.get("REMOTE_ADDR") or "")
    if peer not in trusted:
        return peer
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR") or "")
    if forwarded:
        for part in reversed(forwarded.split(",")):
            ip = _ip(part)
            if ip is None:
                break  # garbage: whatever is left of it cannot be trusted either
            if str(ip) not in trusted:
                return str(ip)
    real = _ip(str(environ.get("HTTP_X_REAL_IP") or ""))
    return str(real) if real is not None else peer
