"""The shard set of a mesh tier: which mesh collectors there are, in the
load-balancing exporter's order, and which one owns a cascade.

A shard set is given as text (``--shards`` of the collector and of
``a2a-quiescence wait``, ``shards=`` of the Python API, the pytest option):

- ``URL,URL,...``: each shard's HTTP API base URL (``http://mesh-0.mesh:9464``).
  Its ring endpoint, the string the exporter hashes, is ``HOST:RING_PORT``
  (``ring_port``: the shards' OTLP/gRPC port, 4317). Order does not matter:
  the exporter's resolvers sort their endpoints, and so does ``Membership``;
- ``ENDPOINT=URL`` in place of a URL names the ring endpoint exactly (needed
  when the exporter knows a shard by another name than its API URL's host);
- ``dns+http://NAME:PORT``: every address NAME resolves to, sorted, each with
  endpoint ``ADDRESS:RING_PORT`` (what the exporter's ``dns`` resolver makes);
- ``@FILE``: the same syntax read from a file (commas or new lines), read
  again at every ``resolve()``: a mounted ConfigMap the chart updates.

No server dependency: the CLI, the pytest plugin and the collector share it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from a2a_quiescence.names import OTLP_GRPC_PORT
from a2a_quiescence.ring import Ring

DEFAULT_RING_PORT = OTLP_GRPC_PORT


@dataclass(frozen=True)
class Shard:
    endpoint: str  # the ring endpoint: what the exporter hashes
    url: str  # the shard's HTTP API base URL


@dataclass(frozen=True)
class Membership:
    """One resolved shard set and its ring."""

    shards: tuple[Shard, ...]

    def __post_init__(self) -> None:
        # every resolver of the exporter sorts its endpoints before building the ring
        object.__setattr__(self, "shards", tuple(sorted(self.shards, key=lambda s: s.endpoint)))
        object.__setattr__(self, "ring", Ring(s.endpoint for s in self.shards))
        object.__setattr__(self, "_by_endpoint", {s.endpoint: s for s in self.shards})

    @property
    def epoch(self) -> str:
        """A short digest of the membership (endpoints in order): equal sets, equal epochs."""
        return hashlib.blake2b("\n".join(s.endpoint for s in self.shards).encode(), digest_size=4).hexdigest()

    def owner(self, trace_id: str) -> Shard | None:
        endpoint = self.ring.endpoint_for(trace_id)  # type: ignore[attr-defined]
        return None if endpoint is None else self._by_endpoint[endpoint]  # type: ignore[attr-defined]

    def endpoints(self) -> tuple[str, ...]:
        return tuple(s.endpoint for s in self.shards)


def _host_port(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _url_shard(item: str, ring_port: int) -> Shard:
    endpoint = None
    if "=" in item:
        endpoint, item = (part.strip() for part in item.split("=", 1))
        if not endpoint:
            raise ValueError(f"empty ring endpoint in {item!r}")
    parsed = urllib.parse.urlsplit(item)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"a shard is an http(s) URL (optionally ENDPOINT=URL), got {item!r}")
    return Shard(endpoint or _host_port(parsed.hostname, ring_port), item.rstrip("/"))


def _dns_url(item: str) -> urllib.parse.SplitResult:
    parsed = urllib.parse.urlsplit(item[len("dns+"):])
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected dns+http://NAME:PORT, got {item!r}")
    return parsed


def _resolve_dns(item: str, ring_port: int) -> list[Shard]:
    parsed = _dns_url(item)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parsed.hostname, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LookupError(f"cannot resolve {parsed.hostname}: {exc}") from exc
    addresses = sorted({info[4][0] for info in infos})
    return [Shard(_host_port(a, ring_port), f"{parsed.scheme}://{_host_port(a, port)}") for a in addresses]


class ShardSpec:
    """A parsed shard-set text; ``resolve()`` gives the current membership."""

    def __init__(self, text: str, ring_port: int = DEFAULT_RING_PORT) -> None:
        self.text = text.strip()
        self.ring_port = ring_port
        if not self.text:
            raise ValueError("empty shard set")
        if not 0 < ring_port < 65536:
            raise ValueError(f"ring port must be 1..65535, got {ring_port}")
        if self.text.startswith("@"):
            if not Path(self.text[1:]).is_file():
                raise ValueError(f"shard-set file {self.text[1:]!r} does not exist")
        else:
            self._shards(self.text, resolve=False)  # refuse bad syntax now; a name may resolve later

    def __str__(self) -> str:
        return self.text

    @property
    def dynamic(self) -> bool:
        """Whether membership can change without a restart (a file or DNS)."""
        return self.text.startswith("@") or "dns+" in self.text

    def resolve(self) -> Membership:
        """The membership now (raises ValueError on bad syntax, LookupError when DNS fails)."""
        text = self.text
        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        return Membership(tuple(self._shards(text, resolve=True)))

    def _shards(self, text: str, resolve: bool) -> list[Shard]:
        shards: list[Shard] = []
        for item in (part.strip() for part in text.replace("\n", ",").split(",")):
            if not item or item.startswith("#"):
                continue
            if item.startswith("dns+"):
                if resolve:
                    shards.extend(_resolve_dns(item, self.ring_port))
                else:
                    _dns_url(item)
            else:
                shards.append(_url_shard(item, self.ring_port))
        if len({s.endpoint for s in shards}) != len(shards):
            raise ValueError("a shard is listed twice")
        return shards

