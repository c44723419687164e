"""Checksum offload across the tx ring, as the two ends negotiated it.

netfront may set ``csum_blank`` only for what the backend offered: IPv4 unless it wrote
``feature-no-csum-offload``, IPv6 only with ``feature-ipv6-csum-offload``.  For the rest it
completes the checksum itself, so what the backend receives is final.  Our netback, like
Linux's, still accepts ``csum_blank`` it did not offer and completes the offsets itself."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from test_vif import _raw_tx
from xennet.abi import netif
from xennet.core import records as r
from xennet.netback.interface import NetbackConfig, Vif
from xennet.netfront.device import NetfrontConfig
from xennet.packet.csum import complete_views
from xennet.packet.frames import build_frame, frame_skb, parse_l3l4, verify
from xennet.packet.skb import Csum, Skb
from xennet.world.local import LocalWorld

PAYLOAD = bytes(range(256)) * 20  # 5120 bytes: the packet spans three slots


def _world(config: NetbackConfig) -> Iterator[LocalWorld]:
    with LocalWorld(backend_config=config) as w:
        yield w


@pytest.fixture
def no_ipv6_csum() -> Iterator[LocalWorld]:
    yield from _world(NetbackConfig(ipv6_csum_offload=False))


@pytest.fixture
def no_csum() -> Iterator[LocalWorld]:
    yield from _world(NetbackConfig(csum_offload=False, ipv6_csum_offload=False))


@pytest.fixture
def full_csum() -> Iterator[LocalWorld]:
    yield from _world(NetbackConfig())


Got = list[tuple[Csum, int, int, bytes]]


def _capture(world: LocalWorld) -> Got:
    got: Got = []

    def keep(_vif: Vif, skb: Skb) -> None:
        got.append((skb.csum, skb.csum_start, skb.csum_offset, skb.data()))
        skb.release()

    world.on_backend_skb = keep
    return got


def _send_partial(world: LocalWorld, ip: int, proto: str, fast: bool, payload: bytes = PAYLOAD) -> bytes:
    """The guest's stack hands netfront a CHECKSUM_PARTIAL packet; returns its bytes."""
    front = world.fronts[(1, 0)]
    built = build_frame(ip=ip, proto=proto, payload=payload, csum="partial")
    if fast:  # the frames path: no skb, the offload state in the packet flags
        frame = built.data
        assert front.send_frames(frame, struct.pack("<I", len(frame)), 1, flags=r.PKT_CSUM_PARTIAL) == 1
    else:
        assert front.send(frame_skb(built, front.memory))
    front.flush()
    world.pump()
    return built.data


@pytest.mark.parametrize("path", ["skb", "frames", "frames_no_sg"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv6_checksum_is_completed_for_a_backend_without_the_feature(
    no_ipv6_csum: LocalWorld, proto: str, path: str
) -> None:
    world = no_ipv6_csum
    sg = path != "frames_no_sg"  # without scatter-gather frames take the skb path one by one
    front = world.attach(config=NetfrontConfig(sg=sg))
    fast, payload = path != "skb", PAYLOAD if sg else PAYLOAD[:1000]
    assert world.toolstack.read_str(f"{world.paths().backend}/feature-ipv6-csum-offload") == "0"
    assert front.features is not None and not front.features.ipv6_csum_offload
    assert not front.features.gso_tcpv6  # no TSO6 without IPv6 checksum offload (as Linux)
    got = _capture(world)
    sent = _send_partial(world, 6, proto, fast, payload)
    assert len(got) == 1
    csum, _start, _off, data = got[0]
    assert csum is not Csum.PARTIAL  # the request carried no csum_blank
    assert len(data) == len(sent) and verify(data)  # the bytes on the wire are final
    assert front.stats.tx_soft_csum == 1
    # IPv4 is still offloaded: the backend completes it
    sent4 = _send_partial(world, 4, proto, fast, payload)
    assert got[1][0] is Csum.PARTIAL and got[1][3] == sent4
    assert front.stats.tx_soft_csum == 1


@pytest.mark.parametrize("ip", [4, 6])
def test_no_csum_offload_means_no_csum_blank_at_all(no_csum: LocalWorld, ip: int) -> None:
    world = no_csum
    front = world.attach()
    assert world.toolstack.read_str(f"{world.paths().backend}/feature-no-csum-offload") == "1"
    assert front.features is not None and not front.features.csum_offload
    assert not front.features.gso_tcpv4 and not front.features.gso_tcpv6
    got = _capture(world)
    _send_partial(world, ip, "tcp", False)
    assert [g[0] is Csum.PARTIAL for g in got] == [False] and verify(got[0][3])
    # a GSO packet is cut in software, and each segment gets its final checksum
    built = build_frame(ip=ip, payload=PAYLOAD, csum="partial")
    assert front.send(frame_skb(built, front.memory, gso_size=1400))
    front.flush()
    world.pump()
    segs = got[1:]
    assert len(segs) == 4 and all(c is not Csum.PARTIAL and verify(d) for c, _s, _o, d in segs)


@pytest.mark.parametrize("ip", [4, 6])
def test_offered_offload_leaves_the_checksum_to_the_backend(full_csum: LocalWorld, ip: int) -> None:
    world = full_csum
    front = world.attach()
    got = _capture(world)
    sent = _send_partial(world, ip, "tcp", False)
    csum, start, off, data = got[0]
    assert csum is Csum.PARTIAL and data == sent  # csum_blank: the pseudo-header sum, not final
    h = parse_l3l4(data)
    assert (start, off) == (h.l4_off, h.csum_offset)
    assert front.stats.tx_soft_csum == 0


def test_netback_accepts_ipv6_csum_blank_it_did_not_offer(no_ipv6_csum: LocalWorld) -> None:
    """Deliberate, as Linux netback: a frontend that sets csum_blank for IPv6 anyway gets its
    packet taken, and the offsets come from the headers (csum_setup)."""
    world = no_ipv6_csum
    world.attach()
    got = _capture(world)
    frame = build_frame(ip=6, payload=PAYLOAD[:1000], csum="partial").data
    flags = netif.NETTXF_csum_blank | netif.NETTXF_data_validated
    assert _raw_tx(world, [(len(frame), 0, 0)], flags, frame) == [(0, netif.NETIF_RSP_OKAY)]
    assert world.vif().stats.tx_packets == 1 and len(got) == 1
    csum, start, off, data = got[0]
    h = parse_l3l4(data)
    assert csum is Csum.PARTIAL and (start, off) == (h.l4_off, h.csum_offset)
    assert data == frame and not verify(data)  # the pseudo-header sum, as sent
    done = bytearray(data)
    complete_views([memoryview(done)], start, off)  # what a port or a stack completes
    assert verify(done)


@pytest.mark.parametrize("fast", [False, True])
def test_gso_the_backend_did_not_offer_is_segmented_here(fast: bool) -> None:
    """A backend without feature-gso-tcpv4 never sees a GSO extra: netfront segments the
    packet first, on the frames path too (it used to post it as it came)."""
    with LocalWorld(backend_config=NetbackConfig(gso=False)) as world:
        got = _capture(world)
        front = world.attach()
        assert front.features is not None and not front.features.gso_tcpv4
        built = build_frame(ip=4, proto="tcp", payload=bytes(range(256)) * 40, csum="partial")
        if fast:
            frame = built.data
            lens = struct.pack("<I", len(frame))
            flags = r.PKT_CSUM_PARTIAL
            assert front.send_frames(
                frame, lens, 1, flags=flags, gso_size=1448, gso_type=netif.XEN_NETIF_GSO_TYPE_TCPV4
            )
        else:
            assert front.send(frame_skb(built, front.memory, gso_size=1448))
        front.flush()
        world.pump()
        assert front.stats.tx_soft_gso == 1
        assert len(got) == 8  # ceil(10240 / 1448)
        assert all(len(data) <= 1514 for _c, _s, _o, data in got)
        assert b"".join(data[54:] for _c, _s, _o, data in got) == bytes(range(256)) * 40
