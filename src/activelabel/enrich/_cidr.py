"""CIDR enrichers: the row of the most specific network containing an IP address.

The table (CSV / JSON / SQLite, read like a lookup table) is keyed by network
(``10.0.0.0/8``, ``2001:db8::/32``, or a bare address for a /32 or /128). A
lookup parses the address once, then tries each prefix length present in the
table, longest first, with one dict access each; results are cached per address
string, because the same addresses recur in traffic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from ._lookup import EMPTY, EnricherError

_CACHE_SIZE = 65_536


class CidrEnricher:
    """The runtime of a ``type: cidr`` enricher: longest-prefix match of an IP address.

    >>> nets = CidrEnricher("net", {"10.0.0.0/8": {"zone": "corp"}, "10.1.0.0/16": {"zone": "lab"}})
    >>> nets.lookup("10.1.2.3")["zone"], nets.lookup("10.9.9.9")["zone"], dict(nets.lookup("8.8.8.8"))
    ('lab', 'corp', {})
    """

    __slots__ = ("_cache", "_size", "_v4", "_v6", "name")

    def __init__(self, name: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        by_len: dict[tuple[int, int], dict[int, Mapping[str, Any]]] = {}
        seen: dict[tuple[int, int, int], str] = {}
        for text, row in rows.items():
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError as exc:
                raise EnricherError(f"`{text}` is not an IP network ({exc})", suggestion="write networks like 10.0.0.0/8") from None
            bits = net.max_prefixlen
            prefix = int(net.network_address) >> (bits - net.prefixlen)
            key = (net.version, net.prefixlen, prefix)
            if key in seen:
                raise EnricherError(f"networks `{seen[key]}` and `{text}` are the same network", suggestion="keys must be unique")
            seen[key] = text
            by_len.setdefault((net.version, net.prefixlen), {})[prefix] = row
        # (host bits to drop, table) per prefix length, most specific first
        self._v4 = [(32 - plen, t) for (v, plen), t in sorted(by_len.items(), key=lambda kv: -kv[0][1]) if v == 4]
        self._v6 = [(128 - plen, t) for (v, plen), t in sorted(by_len.items(), key=lambda kv: -kv[0][1]) if v == 6]
        self._cache: dict[Any, Mapping[str, Any]] = {}
        self._size = len(rows)

    def lookup(self, key: Any) -> Mapping[str, Any]:
        """The row of the most specific network containing ``key`` (an IP address), or the shared empty map."""
        cache = self._cache
        try:
            return cache[key]
        except (KeyError, TypeError):
            pass
        row = self._match(key)
        if type(key) is str:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[key] = row
        return row

    def _match(self, key: Any) -> Mapping[str, Any]:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            return EMPTY
        try:
            ip = ipaddress.ip_address(key.strip() if isinstance(key, str) else key)
        except ValueError:
            return EMPTY
        if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is the IPv4 address
            ip = ip.ipv4_mapped
        n = int(ip)
        for shift, table in self._v4 if ip.version == 4 else self._v6:
            row = table.get(n >> shift)
            if row is not None:
                return row
        return EMPTY

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"CidrEnricher({self.name!r}, {self._size} networks)"
