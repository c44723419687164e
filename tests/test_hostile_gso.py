"""A guest's GSO packets that are not what their GSO extra says: netback refuses them with
error responses, and no port it could reach (capture, TAP, bridge) is crashed by one."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest

from xennet.abi import netif
from xennet.packet.frames import build_frame
from xennet.packet.skb import GSO_TCPV4, GSO_TCPV6, PageSource, Skb, build_skb, linear_layout
from xennet.ports.bridge import LearningBridge, VifPort
from xennet.ports.tap import Tap
from xennet.world.host.serve import Capture
from xennet.world.local import LocalWorld

ZERO = (0, 0, 0, 0)


held = LocalWorld.held  # (pages, grants, maps, ports) each domain holds now


def _mute_frontend(world: LocalWorld, handle: int = 0) -> None:
    world.fronts.pop((1, handle), None)  # the test plays a hostile netfront on its rings


PAYLOAD = bytes(range(256)) * 12  # 3072 bytes: a GSO packet of one slot

FRONT: list = []  # type: ignore[type-arg]
V4, V6 = netif.XEN_NETIF_GSO_TYPE_TCPV4, netif.XEN_NETIF_GSO_TYPE_TCPV6


def _udp_frame() -> bytes:
    return build_frame(ip=4, proto="udp", payload=PAYLOAD).data


def _bad_length_frame() -> bytes:
    f = bytearray(build_frame(ip=4, payload=PAYLOAD).data)
    struct.pack_into("!H", f, 16, 40)  # IPv4 total length: 40 bytes, the packet is 3126
    return bytes(f)


HOSTILE = {  # name: (frame, gso_size, gso_type, counter)
    "udp_as_tcpv4": (_udp_frame(), 1448, V4, "bad_gso_headers"),
    "ipv4_as_tcpv6": (build_frame(ip=4, payload=PAYLOAD).data, 1448, V6, "bad_gso_headers"),
    "not_ip": (b"\xff" * 12 + b"\x88\xb5" + PAYLOAD, 1448, V4, "bad_gso_headers"),
    "ip_length_lies": (_bad_length_frame(), 1448, V4, "bad_gso_headers"),
    "gso_size_1": (build_frame(ip=4, payload=PAYLOAD).data, 1, V4, "gso_size_too_small"),
}


def _gso_tx(
    world: LocalWorld, frame: bytes, gso_size: int, gso_type: int, csum_blank: bool = True
) -> list[tuple[int, int]]:
    """A hostile guest posts one GSO packet (one slot and a GSO extra) on its own tx ring."""
    front = FRONT[0]
    assert front.tx is not None
    _mute_frontend(world)
    p1 = world.platforms[1]
    page = p1.memory.alloc(0)
    page.view[: len(frame)] = frame
    ref = p1.grants.grant_access(0, page.frame, readonly=True)
    ring = front.tx.ring
    flags = netif.NETTXF_extra_info | (netif.NETTXF_csum_blank if csum_blank else 0)
    ring.put_request(ref, 0, flags, 7, len(frame))
    ring.put_request_bytes(netif.gso_extra(gso_size, gso_type))
    ring.push_requests()
    p1.evtchn.notify(front.tx_port)
    world.pump()
    rsps = [ring.get_response() for _ in range(ring.unconsumed_responses())]
    assert p1.grants.end_access(ref)
    p1.memory.free(page)
    return [(r.id, r.status) for r in rsps if r.status != netif.NETIF_RSP_NULL]


@pytest.mark.parametrize("data", ["copy", "map"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_gso_packets_get_error_responses(case: str, data: str) -> None:
    from xennet.netback.interface import NetbackConfig
    from xennet.netback.tx import TxLimits

    frame, gso_size, gso_type, counter = HOSTILE[case]
    with LocalWorld(backend_config=NetbackConfig(tx_limits=TxLimits(data=data))) as world:  # type: ignore[arg-type]
        FRONT[:] = [world.attach()]
        got: list[int] = []
        world.on_backend_skb = lambda vif, skb: (got.append(skb.len), skb.release())  # type: ignore[func-returns-value]
        assert _gso_tx(world, frame, gso_size, gso_type) == [(7, netif.NETIF_RSP_ERROR)]
        vif = world.vif()
        assert vif.connected and vif.stats.tx_errors[counter] == 1 and got == []
        assert vif.stats.tx_packets == 0 and vif.stats.tx_gso_packets == 0
        good = build_frame(ip=4, payload=PAYLOAD, csum="partial").data  # the same guest, a real one
        assert _gso_tx(world, good, 1448, V4) == [(7, netif.NETIF_RSP_OKAY)]
        assert got == [len(good)] and vif.stats.tx_gso_packets == 1
        world.detach()
        assert held(world)[0] == ZERO


@pytest.mark.parametrize("data", ["copy", "map"])
@pytest.mark.parametrize("ip", [4, 6])
def test_gso_without_csum_blank_is_made_partial(ip: int, data: str) -> None:
    """Linux's netback forces CHECKSUM_PARTIAL on a GSO packet that came without csum_blank
    (rx_gso_checksum_fixup), so every segment cut from it gets its own checksum."""
    from xennet.netback.interface import NetbackConfig
    from xennet.netback.tx import TxLimits
    from xennet.packet.csum import complete_partial
    from xennet.packet.frames import verify
    from xennet.packet.gso import segment
    from xennet.packet.skb import Csum

    frame = build_frame(ip=ip, payload=PAYLOAD).data  # a full, final checksum; no csum_blank
    with LocalWorld(backend_config=NetbackConfig(tx_limits=TxLimits(data=data))) as world:  # type: ignore[arg-type]
        FRONT[:] = [world.attach()]
        vif = world.vif()
        segs: list[bytes] = []
        seen: list[tuple[Csum, int, int]] = []

        def take(_vif: object, skb: Skb) -> None:
            seen.append((skb.csum, skb.csum_start, skb.csum_offset))
            for seg in segment(skb, 1448, vif.memory):
                complete_partial(seg)
                segs.append(seg.data())
                seg.release()
            skb.release()

        world.on_backend_skb = take  # type: ignore[assignment]
        assert _gso_tx(world, frame, 1448, V4 if ip == 4 else V6, csum_blank=False) == [
            (7, netif.NETIF_RSP_OKAY)
        ]
        l4_off = 14 + (20 if ip == 4 else 40)
        assert seen == [(Csum.PARTIAL, l4_off, 16)]
        assert vif.stats.tx_gso_checksum_fixup == 1
        assert len(segs) == 3 and all(verify(sg) for sg in segs)
        assert b"".join(sg[l4_off + 20 :] for sg in segs) == PAYLOAD
        world.detach()
        assert held(world)[0] == ZERO


def _hostile_skbs(src: PageSource) -> list[tuple[str, Skb]]:
    out = []
    for name, (frame, gso_size, gso_type, _c) in sorted(HOSTILE.items()):
        skb = build_skb(frame, linear_layout(len(frame)), src)
        skb.gso_size, skb.gso_type = gso_size, GSO_TCPV4 if gso_type == V4 else GSO_TCPV6
        out.append((name, skb))
    short = build_skb(b"\x02" * 12 + b"\x08\x00" + bytes(6), linear_layout(20), src)  # headers cut off
    short.gso_size, short.gso_type = 1448, GSO_TCPV4
    out.append(("truncated", short))
    return out


@pytest.mark.parametrize("name", [*sorted(HOSTILE), "truncated"])
def test_no_port_is_crashed_by_a_hostile_gso_skb(name: str, tmp_path: Path) -> None:
    """Defence in depth: even if such an skb got past netback, every port takes it quietly."""
    with LocalWorld() as world:
        world.attach()
        vif = world.vif()
        skb = dict(_hostile_skbs(vif.memory))[name]
        cap = Capture(str(tmp_path / "c.pcap"))
        cap.record(skb)  # pcap: segmented (gso_size 1: at most len bytes of segments) or written whole
        cap.close()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            tap = Tap(os.dup(a.fileno()), "hostile0", offloads=True, mtu=1500)
            tap.write_skb(skb)  # TAP: refused with a count, or handed to the kernel to judge
            tap.close()
        finally:
            a.close()
            b.close()
        bridge = LearningBridge()
        bridge.attach(VifPort(vif))
        bridge.input("elsewhere", skb)  # bridge -> the vif's rx queue: queued or dropped, counted
        world.pump()
        assert vif.connected


def test_multicast_table_is_bounded_and_overflow_refused() -> None:
    """A guest cannot grow netback's multicast set without bound: past 64 it gets errors."""
    from xennet.netback.stats import GRANT_ERROR_KEYS, grant_error_key
    from xennet.netback.tx import MCAST_MAX

    with LocalWorld() as world:
        front = world.attach()
        assert front.tx is not None
        _mute_frontend(world)
        ring = front.tx.ring
        statuses = []
        for batch in range(0, 80, 40):
            for i in range(batch, batch + 40):
                ring.put_request(0, 0, netif.NETTXF_extra_info, i, 0)
                addr = bytes([1, 0, 0x5E, 0, i >> 8, i & 0xFF])
                ring.put_request_bytes(bytes([netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD, 0]) + addr)
            ring.push_requests()
            world.platforms[1].evtchn.notify(front.tx_port)
            world.pump()
            rsps = [ring.get_response() for _ in range(ring.unconsumed_responses())]
            statuses += [(r.id, r.status) for r in rsps if r.status != netif.NETIF_RSP_NULL]
        vif = world.vif()
        assert vif.connected and vif.tx is not None and len(vif.tx.mcast) == MCAST_MAX
        assert sorted(statuses) == [(i, 0 if i < MCAST_MAX else netif.NETIF_RSP_ERROR) for i in range(80)]
        assert vif.stats.tx_errors["mcast_table_full"] == 80 - MCAST_MAX
    # grant failures are counted under a fixed set of keys, whatever the status
    assert {grant_error_key("map", s) for s in [None, 0, -4, -999, 12345]} <= GRANT_ERROR_KEYS
