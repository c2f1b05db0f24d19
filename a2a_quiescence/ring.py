"""The consistent-hash ring of the OpenTelemetry Collector's load-balancing
exporter, so that our tools and shards agree with it on which mesh collector
owns a cascade.

Ported from open-telemetry/opentelemetry-collector-contrib,
``exporter/loadbalancingexporter/consistent_hashing.go`` as released in
``EXPORTER_VERSION`` (after PR #49585; docs/scale-out.md says why that version):

- the ring has 131,071 positions; each endpoint gets 200 candidate points:
  the CRC-32 (IEEE) of the endpoint's bytes followed by ``i`` (0..199) as a
  4-byte little-endian integer, modulo 131,071;
- the candidates of all endpoints are placed in the order (position, CRC-32,
  endpoint), whatever order the endpoints were given in; a candidate whose
  position is already taken moves to the next free position, at most 10 steps
  ahead, or is dropped (after 10 steps it is dropped even if the 10th is free);
- a key goes to the first point at or after CRC-32(key) mod 131,071,
  wrapping to the lowest point.

For log records routed with ``routing_key: traceID`` the exporter hashes the
32-character lower-case hex trace id (PR #46241). Before PR #49585 (v0.154.0,
which this module ported until the collector was built here) the ring had 100
points, 36,000 positions and endpoint-order collisions: an exporter of another
version routes differently, so the chart's image is pinned to this version and
tests/test_otelcol.py routes through a collector built from it.
"""

from __future__ import annotations

import bisect
import zlib
from typing import Iterable

# the exporter version whose ring and routing key this module reproduces
# (collector/otelcol/builder-config.yaml and the chart's image tag pin the same)
EXPORTER_VERSION = "v0.161.0"
MAX_POSITIONS = 131_071
WEIGHT = 200
LINEAR_PROBE_LIMIT = 10


def _hashes(endpoint: str, points: int) -> list[int]:
    base = zlib.crc32(endpoint.encode("utf-8"))
    # crc32(endpoint + uint32le(i)) continues the checksum of the endpoint's bytes
    return [zlib.crc32(i.to_bytes(4, "little"), base) for i in range(points)]


def positions_for(endpoint: str, points: int = WEIGHT) -> list[int]:
    """An endpoint's candidate points on the ring, in the order the exporter computes them."""
    return [h % MAX_POSITIONS for h in _hashes(endpoint, points)]


def routing_key(trace_id_hex: str) -> bytes:
    """The bytes the pinned exporter version hashes for a log record routed by
    ``routing_key: traceID``: the 32-character lower-case hex trace id."""
    return trace_id_hex.lower().encode("ascii")


class Ring:
    """An immutable ring over endpoints (their order does not matter; ``Membership``
    sorts them anyway, as every resolver does)."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self.endpoints: tuple[str, ...] = tuple(endpoints)
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError("an endpoint is listed twice")
        candidates = sorted(
            (h % MAX_POSITIONS, h, endpoint) for endpoint in self.endpoints for h in _hashes(endpoint, WEIGHT)
        )
        taken: dict[int, str] = {}
        for pos, _, endpoint in candidates:
            probed = 0
            while pos in taken and probed < LINEAR_PROBE_LIMIT:
                pos = (pos + 1) % MAX_POSITIONS
                probed += 1
            if probed >= LINEAR_PROBE_LIMIT:
                continue  # no free position near: the exporter drops this point
            taken[pos] = endpoint
        items = sorted(taken.items())
        self._positions: list[int] = [pos for pos, _ in items]
        self._owners: list[str] = [endpoint for _, endpoint in items]

    def __len__(self) -> int:
        return len(self.endpoints)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and self._positions == other._positions and self._owners == other._owners

    def endpoint_for_key(self, key: bytes) -> str | None:
        """The endpoint owning ``key``; None on an empty ring."""
        if not self._positions:
            return None
        pos = zlib.crc32(key) % MAX_POSITIONS
        i = bisect.bisect_left(self._positions, pos)
        return self._owners[i if i < len(self._positions) else 0]

    def endpoint_for(self, trace_id_hex: str) -> str | None:
        """The endpoint owning the cascade (W3C trace id, 32 hex digits)."""
        return self.endpoint_for_key(routing_key(trace_id_hex))

    def share(self) -> dict[str, float]:
        """The fraction of the key space each endpoint owns (for docs and tests)."""
        if not self._positions:
            return {}
        out = dict.fromkeys(self.endpoints, 0.0)
        previous = self._positions[-1] - MAX_POSITIONS
        for pos, owner in zip(self._positions, self._owners):
            out[owner] += (pos - previous) / MAX_POSITIONS
            previous = pos
        return out
