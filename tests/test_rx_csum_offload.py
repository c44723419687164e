"""Checksum offload across the rx ring, as the frontend negotiated it.

netback may set ``csum_blank`` toward a guest only where the frontend takes it: IPv4 unless
it wrote ``feature-no-csum-offload``, IPv6 only with ``feature-ipv6-csum-offload``.  For the
rest netback completes the checksum (in a copy of its own when the skb may be shared), and
GSO goes only with the checksum offload of its IP version (Linux's xenvif_fix_features)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from xennet.core import records as r
from xennet.core.vec import PacketVec, Piece
from xennet.netback.interface import Vif
from xennet.netfront.device import NetfrontConfig
from xennet.packet.frames import build_frame, frame_skb, verify
from xennet.packet.offload import complete_unoffered
from xennet.packet.skb import GSO_TCPV4
from xennet.platform.base import PAGE_SIZE
from xennet.world.local import LocalWorld

PAYLOAD = bytes(range(256)) * 12  # 3072 bytes


def _world(config: NetfrontConfig) -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        w.attach(config=config)
        yield w


@pytest.fixture
def no_csum() -> Iterator[LocalWorld]:
    yield from _world(NetfrontConfig(csum_offload=False))


@pytest.fixture
def csum() -> Iterator[LocalWorld]:
    yield from _world(NetfrontConfig())


def _deliver_partial(world: LocalWorld, ip: int, path: str) -> tuple[Vif, bytes]:
    vif = world.vif()
    built = build_frame(ip=ip, proto="tcp", payload=PAYLOAD, csum="partial")
    assert not verify(built.data)  # the checksum field holds only the pseudo-header sum
    if path == "skb":
        assert vif.send_to_guest(frame_skb(built, vif.memory))
    else:
        frame = built.data
        assert vif.send_frames(frame, struct.pack("<I", len(frame)), 1, flags=r.PKT_CSUM_PARTIAL) == 1
    vif.kick_rx()
    world.pump()
    (got,) = world.to_guest[(1, 0)]
    return vif, got


@pytest.mark.parametrize("path", ["skb", "frames"])
@pytest.mark.parametrize("ip", [4, 6])
def test_a_frontend_without_csum_offload_gets_final_checksums(
    no_csum: LocalWorld, ip: int, path: str
) -> None:
    assert no_csum.toolstack.read_str(f"{no_csum.paths().frontend}/feature-no-csum-offload") == "1"
    vif, got = _deliver_partial(no_csum, ip, path)
    assert verify(got)
    assert vif.stats.rx_soft_csum == 1
    assert vif.stats.rx_csum_unparseable == 0


@pytest.mark.parametrize("path", ["skb", "frames"])
@pytest.mark.parametrize("ip", [4, 6])
def test_a_frontend_with_csum_offload_gets_csum_blank(csum: LocalWorld, ip: int, path: str) -> None:
    vif, got = _deliver_partial(csum, ip, path)
    assert vif.stats.rx_soft_csum == 0
    assert not verify(got)  # left partial, for the guest's stack (CHECKSUM_PARTIAL, as in Linux)


def test_a_shared_skb_is_never_written(no_csum: LocalWorld) -> None:
    """A bridge floods one skb to several vifs: completing the checksum in it would hand the
    others a final sum still marked partial (completed twice: wrong)."""
    vif = no_csum.vif()
    built = build_frame(ip=4, proto="tcp", payload=PAYLOAD, csum="partial")
    skb = frame_skb(built, vif.memory)
    skb.get()  # another vif's reference
    assert vif.send_to_guest(skb)
    vif.kick_rx()
    no_csum.pump()
    assert skb.data() == built.data  # the original is untouched
    assert verify(no_csum.to_guest[(1, 0)][0])
    skb.release()


def test_gso_needs_the_checksum_offload_of_its_version(no_csum: LocalWorld) -> None:
    vif = no_csum.vif()
    built = build_frame(ip=4, proto="tcp", payload=bytes(20000), csum="partial")
    assert not vif.send_to_guest(frame_skb(built, vif.memory, gso_size=1448))
    assert vif.stats.rx_dropped["needs_gso"] == 1
    assert vif.rx is not None and GSO_TCPV4 not in vif.rx.gso_types


def _vec_of(frames: list[bytes]) -> tuple[PacketVec, memoryview]:
    mem = memoryview(bytearray(PAGE_SIZE * len(frames)))
    vec = PacketVec(8, 8)
    for i, f in enumerate(frames):
        mem[i * PAGE_SIZE : i * PAGE_SIZE + len(f)] = f
        vec.append([Piece(i, 0, len(f))], flags=r.PKT_CSUM_PARTIAL)
    return vec, mem


def test_only_the_version_not_offered_is_completed() -> None:
    v4 = build_frame(ip=4, proto="udp", payload=PAYLOAD, csum="partial").data
    v6 = build_frame(ip=6, proto="udp", payload=PAYLOAD, csum="partial").data
    vec, mem = _vec_of([v4, v6])
    assert complete_unoffered(vec, mem, 0, True, False) == (1, 0)
    assert vec.packet(0).flags & r.PKT_CSUM_PARTIAL  # IPv4: offered, left to the peer
    assert not vec.packet(1).flags & r.PKT_CSUM_PARTIAL
    assert not verify(mem[: len(v4)]) and verify(mem[PAGE_SIZE : PAGE_SIZE + len(v6)])


def test_an_unparseable_partial_packet_goes_without_the_flag() -> None:
    junk = bytes(60)  # no IP headers, no offsets: nothing to complete
    vec, mem = _vec_of([junk])
    assert complete_unoffered(vec, mem, 0, False, False) == (0, 1)
    assert not vec.packet(0).flags & r.PKT_CSUM_PARTIAL
    assert bytes(mem[:60]) == junk


def test_a_tap_frame_with_csum_blank_is_completed_for_such_a_frontend(no_csum: LocalWorld) -> None:
    """The TAP port's fast path: frames read straight into the pool (``commit``)."""
    import os
    import socket

    from xennet.ports.tap import Tap
    from xennet.ports.vnet import VIRTIO_NET_HDR_F_NEEDS_CSUM, VnetHdr

    vif = no_csum.vif()
    built = build_frame(ip=6, proto="udp", payload=PAYLOAD[:1000], csum="partial")  # under the MTU
    needs = VIRTIO_NET_HDR_F_NEEDS_CSUM
    hdr = VnetHdr(flags=needs, csum_start=built.csum_start, csum_offset=built.csum_offset)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        fd = os.dup(a.fileno())
        os.set_blocking(fd, False)  # as a TAP is opened
        tap = Tap(fd, "csum0", offloads=True, mtu=1500)
        b.send(hdr.pack() + built.data)
        assert vif.rx is not None
        assert tap.read_into(vif.rx) == 1, (vif.rx.room(), tap.stats)
        tap.close()
    finally:
        a.close()
        b.close()
    vif.kick_rx()
    no_csum.pump()
    (got,) = no_csum.to_guest[(1, 0)]
    assert got != built.data and verify(got)
    assert vif.stats.rx_soft_csum == 1
