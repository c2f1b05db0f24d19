"""The load-balancing exporter's ring (a2a_quiescence.ring) and the shard set
(a2a_quiescence.shards).

The ring is checked against a second, deliberately naive port written here
from the exporter's description (contrib v0.161.0 consistent_hashing.go: CRC-32
IEEE of endpoint + uint32le(i), 200 candidate points, 131,071 positions,
candidates placed in (position, hash, endpoint) order with linear probing of at
most 10, first item at or after the key's position, wrapping; the logs key is
the 32-character hex trace id), which shares no code with the product's. The
real exporter, built from the pinned release, is checked against the ring in
tests/test_otelcol.py.
"""

from __future__ import annotations

import binascii
import random
import socket
import struct

import pytest

from a2a_quiescence import ring as ringmod
from a2a_quiescence.ring import MAX_POSITIONS, Ring, positions_for, routing_key
from a2a_quiescence.shards import Membership, Shard, ShardSpec


def naive_owner(endpoints: list[str], trace_id_hex: str) -> str:
    candidates = []
    for endpoint in endpoints:
        for i in range(200):
            h = binascii.crc32(endpoint.encode() + struct.pack("<I", i))
            candidates.append((h % 131071, h, endpoint))
    used: dict[int, str] = {}
    for pos, _, endpoint in sorted(candidates):
        probes = 0
        while pos in used and probes < 10:
            pos = (pos + 1) % 131071
            probes += 1
        if probes == 10:
            continue
        used[pos] = endpoint
    key = binascii.crc32(trace_id_hex.encode()) % 131071
    at_or_after = [p for p in used if p >= key]
    return used[min(at_or_after) if at_or_after else min(used)]


def test_crc32_is_ieee() -> None:
    # the standard check value of CRC-32/IEEE (ISO-HDLC)
    assert binascii.crc32(b"123456789") == 0xCBF43926
    assert positions_for("a", 1) == [binascii.crc32(b"a\x00\x00\x00\x00") % MAX_POSITIONS]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16])
def test_ring_agrees_with_a_naive_port(n: int) -> None:
    rnd = random.Random(n)
    endpoints = sorted(f"mesh-{i}.mesh-headless.ns:4317" for i in range(n))
    ring = Ring(endpoints)
    for _ in range(400):
        trace_id = "%032x" % rnd.getrandbits(128)
        assert ring.endpoint_for(trace_id) == naive_owner(endpoints, trace_id)


def test_the_logs_key_is_the_hex_trace_id() -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    assert routing_key(trace_id.upper()) == trace_id.encode()
    ring = Ring(["a:4317", "b:4317", "c:4317"])
    assert ring.endpoint_for(trace_id) == ring.endpoint_for_key(trace_id.encode())


def test_collisions_probe_forward_and_the_lower_hash_keeps_the_point() -> None:
    with pytest.raises(ValueError):
        Ring(["a:1", "a:1"])  # listed twice: every point would collide
    # two endpoints that share a position: the lower (hash, endpoint) keeps it, whatever the
    # order they are given in (PR #49585), and the other's point moves on
    pair = next((f"e{i}:1", f"e{j}:1") for i in range(200) for j in range(i + 1, 200)
                if set(positions_for(f"e{i}:1")) & set(positions_for(f"e{j}:1")))
    shared = sorted(set(positions_for(pair[0])) & set(positions_for(pair[1])))[0]
    hashes = {e: next(binascii.crc32(e.encode() + struct.pack("<I", i)) for i in range(200)
                      if positions_for(e)[i] == shared) for e in pair}
    keeper = min(pair, key=lambda e: (hashes[e], e))
    other = pair[1] if keeper == pair[0] else pair[0]
    for order in (list(pair), list(reversed(pair))):
        points = dict(zip(Ring(order)._positions, Ring(order)._owners))
        assert points[shared] == keeper
        assert other in [points.get((shared + k) % MAX_POSITIONS) for k in range(1, 11)]
        assert len(points) == 400  # nothing dropped: a free position was near
    assert Ring(list(pair)) == Ring(list(reversed(pair)))


def test_an_empty_ring_owns_nothing() -> None:
    assert Ring([]).endpoint_for("ab" * 16) is None


def test_about_a_quarter_moves_when_a_fourth_shard_joins() -> None:
    rnd = random.Random(1)
    ids = ["%032x" % rnd.getrandbits(128) for _ in range(4000)]
    three = [f"mesh-{i}.m.ns:4317" for i in range(3)]
    before, after = Ring(three), Ring(three + ["mesh-3.m.ns:4317"])
    gone = [t for t in ids if before.endpoint_for(t) != after.endpoint_for(t)]
    assert 0.15 < len(gone) / len(ids) < 0.35
    # and only to the new shard: consistent hashing moves nothing between old shards
    new_ring = Ring(three + ["mesh-3.m.ns:4317"])
    assert {new_ring.endpoint_for(t) for t in gone} == {"mesh-3.m.ns:4317"}
    assert sum(Ring(three).share().values()) == pytest.approx(1.0)


def test_pinned_version_is_stated() -> None:
    assert ringmod.EXPORTER_VERSION == "v0.161.0"
    assert (ringmod.MAX_POSITIONS, ringmod.WEIGHT, ringmod.LINEAR_PROBE_LIMIT) == (131_071, 200, 10)


# --- the shard set ----------------------------------------------------------------------------
def test_urls_give_host_and_ring_port_and_are_sorted() -> None:
    m = ShardSpec("http://mesh-1.h.ns:9464, http://mesh-0.h.ns:9464").resolve()
    assert m.endpoints() == ("mesh-0.h.ns:4317", "mesh-1.h.ns:4317")
    assert m.shards[0].url == "http://mesh-0.h.ns:9464"
    assert ShardSpec("http://a:9464", ring_port=5317).resolve().endpoints() == ("a:5317",)


def test_explicit_endpoints_and_owner() -> None:
    m = ShardSpec("10.0.0.1:4317=http://one:9464,10.0.0.2:4317=http://two:9464").resolve()
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    owner = m.owner(trace_id)
    assert owner is not None and owner.endpoint == naive_owner(["10.0.0.1:4317", "10.0.0.2:4317"], trace_id)
    assert m.epoch == Membership((Shard("10.0.0.2:4317", "x"), Shard("10.0.0.1:4317", "y"))).epoch


def test_file_is_read_again(tmp_path) -> None:
    f = tmp_path / "shards"
    f.write_text("http://a:9464\n# a comment\nhttp://b:9464\n")
    spec = ShardSpec(f"@{f}")
    assert spec.dynamic and len(spec.resolve().shards) == 2
    f.write_text("http://a:9464\n")
    assert spec.resolve().endpoints() == ("a:4317",)


def test_dns_gives_sorted_addresses() -> None:
    m = ShardSpec("dns+http://localhost:9464").resolve()
    addresses = sorted({i[4][0] for i in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)})
    assert len(m.shards) == len(addresses) >= 1
    assert all(s.endpoint.endswith(":4317") and s.url.endswith(":9464") for s in m.shards)


@pytest.mark.parametrize("bad", ["", "ftp://a", "a:1=,", "http://a:9464,http://a:9464", "@/does/not/exist",
                                 "dns+ftp://x"])
def test_bad_shard_sets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        ShardSpec(bad)
