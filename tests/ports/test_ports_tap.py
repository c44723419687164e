"""The TAP port against the real Linux stack, inside a namespace each test creates.

The test plays the peer on the TAP's wire (10.213.0.2 / fd00:213::2, MAC 02:13:00:00:00:02):
it reads what the namespace's kernel sends with ``read_skb`` and injects frames with
``write_frame`` / ``write_skb``.  TCP is a scripted peer: SYN, read the SYN-ACK, ACK, then
data both ways -- which is what makes the kernel use TSO toward the TAP and accept GSO
frames from it.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap
from tapnet import PEER_MAC, PEER_V4, PEER_V6, TAP_V4, TAP_V6, open_tap

from xennet.packet.csum import complete_partial
from xennet.packet.frames import build_frame, frame_skb, parse_l3l4, verify
from xennet.packet.gso import segment
from xennet.packet.skb import GSO_NONE, GSO_TCPV4, GSO_TCPV6, Csum, HeapPages, Piece, Skb
from xennet.platform.base import PAGE_SIZE
from xennet.ports.netns import Netns, NetnsError
from xennet.ports.pcap import PcapWriter
from xennet.ports.tap import Tap, TapError, TapGone
from xennet.ports.vnet import VnetHdr

TIMEOUT = 5.0
PORT = 5201


def summary(skb: Skb) -> str:
    return Ether(skb.data()).summary()


def read_until(tap: Tap, pages: HeapPages, want: Callable[[Skb], bool], timeout: float = TIMEOUT) -> Skb:
    """The first frame ``want`` accepts; others (IPv6 MLD/ND noise, ACKs...) are released."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(tap.fileno(), select.POLLIN)
    while True:
        skb = tap.read_skb(pages)
        if skb is None:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no wanted frame on {tap.name} in {timeout}s; saw {seen}")
            poller.poll(int(left * 1000) + 1)
            continue
        if want(skb):
            return skb
        seen.append(summary(skb))
        skb.release()


def has_layer(layer: type) -> Callable[[Skb], bool]:
    return lambda skb: bool(Ether(skb.data()).haslayer(layer))


def is_tcp_from(port: int) -> Callable[[Skb], bool]:
    def want(skb: Skb) -> bool:
        e = Ether(skb.data())
        return bool(e.haslayer(TCP)) and e[TCP].sport == port

    return want


# -- basics ----------------------------------------------------------------------------------


def test_tap_lives_in_the_namespace_and_goes_with_its_fd(netns: Netns) -> None:
    tap = Tap.open("xtap%d", netns=netns.name)
    try:
        assert tap.name.startswith("xtap") and tap.name in netns.links()
        assert tap.name not in _host_links()  # /sys/class/net shows this process's namespace
        assert tap.fileno() >= 0 and not tap.closed
    finally:
        tap.close()
    assert tap.closed and tap.name not in netns.links()
    tap.close()  # idempotent


def _host_links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def test_open_errors_are_tap_errors(netns: Netns) -> None:
    with pytest.raises(TapError, match="longer than"):
        Tap.open("x" * 16, netns=netns.name)
    with pytest.raises(TapError, match="no-such-ns"):
        Tap.open("xtap%d", netns="xennet-no-such-ns")
    with pytest.raises(NetnsError):
        netns.link_index("nope0")


# -- ARP, then UDP ---------------------------------------------------------------------------


def test_arp_request_then_udp_after_injected_reply(tap_any: tuple[Netns, Tap], pages: HeapPages) -> None:
    ns, tap = tap_any
    mac = ns.link_mac(tap.name)
    s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"xennet says hello", (PEER_V4, 9999))
        arp_skb = read_until(tap, pages, has_layer(ARP))
        a = Ether(arp_skb.data())
        assert a.dst == "ff:ff:ff:ff:ff:ff" and a.src == mac
        assert (a[ARP].op, a[ARP].psrc, a[ARP].pdst, a[ARP].hwsrc) == (1, TAP_V4, PEER_V4, mac)
        assert arp_skb.len == 42 and not arp_skb.frags
        assert (arp_skb.csum, arp_skb.gso_type) == (Csum.NONE, GSO_NONE)
        arp_skb.release()

        reply = Ether(src=PEER_MAC, dst=mac) / ARP(op=2, hwsrc=PEER_MAC, psrc=PEER_V4, hwdst=mac, pdst=TAP_V4)
        assert tap.write_frame(bytes(reply))

        udp = read_until(tap, pages, has_layer(UDP))
        e = Ether(udp.data())
        assert (e.src, e.dst, e[IP].src, e[IP].dst) == (mac, PEER_MAC, TAP_V4, PEER_V4)
        assert (e[UDP].dport, bytes(e[UDP].payload)) == (9999, b"xennet says hello")
        if tap.offloads:  # the kernel left the UDP checksum to us: csum_start/offset point at it
            assert (udp.csum, udp.csum_start, udp.csum_offset) == (Csum.PARTIAL, 34, 6)
            assert complete_partial(udp)
        else:
            assert udp.csum is not Csum.PARTIAL
        assert verify(udp.data())
        udp.release()
    finally:
        s.close()
    assert pages.live == 0, "read_skb kept pages it did not hand out"
    assert tap.stats.tx_packets == 1 and tap.stats.rx_packets >= 2
    assert not tap.stats.rx_drops and not tap.stats.tx_drops


# -- TCP with a scripted peer ---------------------------------------------------------------


class Peer:
    """Our end of one TCP connection with a listening socket in the namespace."""

    def __init__(self, ns: Netns, tap: Tap, pages: HeapPages, ip: int) -> None:
        self.ns, self.tap, self.pages, self.ip = ns, tap, pages, ip
        self.mac = ns.link_mac(tap.name)
        self.local, self.remote = (TAP_V4, PEER_V4) if ip == 4 else (TAP_V6, PEER_V6)
        self.mss = 1460 if ip == 4 else 1440
        self.seq = 1_000_000
        self.conn: socket.socket | None = None
        ns.add_neighbor(tap.name, self.remote, PEER_MAC)
        family = socket.AF_INET if ip == 4 else socket.AF_INET6
        self.listener = ns.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.listener.bind((self.local, PORT))
        self.listener.listen(1)
        self.listener.settimeout(TIMEOUT)

    def l3(self) -> IP | IPv6:
        return IP(src=self.remote, dst=self.local) if self.ip == 4 else IPv6(src=self.remote, dst=self.local)

    def handshake(self) -> socket.socket:
        syn = Ether(src=PEER_MAC, dst=self.mac) / self.l3()
        syn /= TCP(sport=40000, dport=PORT, flags="S", seq=self.seq, window=65535,
                   options=[("MSS", self.mss), ("WScale", 7)])  # fmt: skip
        assert self.tap.write_frame(bytes(syn))
        sa = read_until(self.tap, self.pages, is_tcp_from(PORT))
        t = Ether(sa.data())[TCP]
        assert t.flags == "SA" and t.ack == self.seq + 1
        sa.release()
        self.seq += 1
        self.server_isn = t.seq
        ack = Ether(src=PEER_MAC, dst=self.mac) / self.l3()
        ack /= TCP(sport=40000, dport=PORT, flags="A", seq=self.seq, ack=t.seq + 1, window=65535)
        assert self.tap.write_frame(bytes(ack))
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(TIMEOUT)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def ip(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = conn.recv(65536)
        assert chunk, "connection closed early"
        got += chunk
    return bytes(got)


def payload_of(frame: bytes) -> bytes:
    h = parse_l3l4(frame)
    return frame[h.payload_off : h.frame_len]


def test_stack_sends_tso_frames_through_the_tap(
    tap_any: tuple[Netns, Tap], pages: HeapPages, ip: int, tmp_path: Path
) -> None:
    """The namespace's TCP sends 200 KB.  With offloads the TAP gets GSO frames bigger than the
    MTU (gso_type TCPv4/v6, gso_size = the MSS we announced, checksum PARTIAL); software
    segmentation of them gives valid MSS-sized segments carrying exactly the bytes sent.
    Without offloads every frame fits the MTU with a complete checksum."""
    ns, tap = tap_any
    peer = Peer(ns, tap, pages, ip)
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(200_000))
    got = bytearray()
    gso_frames = 0
    pcap = tmp_path / "tso.pcap"
    try:
        conn = peer.handshake()
        conn.sendall(data)
        with PcapWriter(pcap) as w:
            while len(got) < 10 * peer.mss:  # the initial congestion window: 10 segments
                skb = read_until(tap, pages, is_tcp_from(PORT))
                h = parse_l3l4(skb.read(0, 200), headers_only=True)
                assert skb.len == h.frame_len
                if skb.len == h.payload_off:  # a pure ACK
                    skb.release()
                    continue
                seq = Ether(skb.read(0, 200))[TCP].seq
                assert seq == (peer.server_isn + 1 + len(got)) & 0xFFFFFFFF, "frames out of order"
                if skb.gso_type != GSO_NONE:
                    gso_frames += 1
                    assert tap.offloads
                    assert skb.gso_type == (GSO_TCPV4 if ip == 4 else GSO_TCPV6)
                    assert skb.gso_size == peer.mss and skb.len > tap.mtu + 14
                    assert (skb.csum, skb.csum_start, skb.csum_offset) == (Csum.PARTIAL, h.l4_off, 16)
                    assert len(skb.frags) == (skb.len - 1) // 4096  # the frame on 4 KiB pages
                    w.write_skb(skb)
                    assert w.write_segmented(skb, pages) == -(-h.payload_len // peer.mss)
                    segs = segment(skb, skb.gso_size, pages)
                    for s in segs:
                        complete_partial(s)
                        frame = s.data()
                        assert verify(frame) and len(frame) <= tap.mtu + 14
                        got += payload_of(frame)
                        s.free(pages)
                else:
                    assert skb.len <= tap.mtu + 14
                    if skb.csum is Csum.PARTIAL:
                        complete_partial(skb)
                    assert verify(skb.data())
                    got += payload_of(skb.data())
                skb.release()
        assert bytes(got) == data[: len(got)]
        if tap.offloads:
            assert gso_frames >= 1, "offloads on, but the kernel sent no GSO frame"
            recs = rdpcap(str(pcap))
            assert len(recs) > gso_frames and max(len(r) for r in recs) > tap.mtu + 14
        else:
            assert gso_frames == 0
    finally:
        peer.close()
    assert pages.live == 0
    assert not tap.stats.rx_drops


def test_stack_takes_a_gso_frame_from_the_tap(tap_on: tuple[Netns, Tap], pages: HeapPages, ip: int) -> None:
    """We inject one 30000-byte TCP GSO frame, checksum PARTIAL, on oddly laid out pages
    (header split across buffers); writev hands the kernel header + 4 buffers and the socket
    in the namespace reads exactly the payload."""
    ns, tap = tap_on
    peer = Peer(ns, tap, pages, ip)
    payload = bytes((i * 13 + 5) & 0xFF for i in range(30_000))
    try:
        conn = peer.handshake()
        f = build_frame(
            ip=ip, payload=payload, src_mac=PEER_MAC, dst_mac=peer.mac, src_ip=peer.remote,
            dst_ip=peer.local, sport=40000, dport=PORT, seq=peer.seq, ack=peer.server_isn + 1,
            flags="PA", window=65535, csum="partial",
        )  # fmt: skip
        n = len(f.data)
        layout = (Piece(4000, 40, 0), Piece(100, 7000, 1), Piece(3, 16000, 3), Piece(0, n - 23040, 2))
        skb = frame_skb(f, pages, layout, gso_size=peer.mss)
        assert tap.write_skb(skb)
        skb.release()
        assert tap.stats.tx_bytes >= n
        assert recv_exactly(conn, len(payload)) == payload
    finally:
        peer.close()
    assert not tap.stats.tx_drops


@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
def test_write_vec_merges_a_run_of_segments_for_the_stack(
    tap_on: tuple[Netns, Tap], gro: bool, ip: int
) -> None:
    """Eight in-order segments of one connection, checksum-partial, in one vector: with
    ``gro`` the kernel gets one GSO frame (one write), without it eight; the socket in the
    namespace reads exactly the bytes either way.  A ninth packet, a pure ACK, goes on its own."""
    from xennet.core import records as r
    from xennet.core.vec import PacketVec
    from xennet.core.vec import Piece as VecPiece

    ns, tap = tap_on
    tap.gro = gro
    pages = HeapPages()
    peer = Peer(ns, tap, pages, ip)
    try:
        conn = peer.handshake()
        payload = bytes((i * 7 + 3) & 0xFF for i in range(8 * 1400))
        mem = memoryview(bytearray(PAGE_SIZE * 9))
        vec = PacketVec(16, 16)
        for k in range(9):
            chunk = payload[k * 1400 : (k + 1) * 1400]
            f = build_frame(
                ip=ip, payload=chunk, src_mac=PEER_MAC, dst_mac=peer.mac, src_ip=peer.remote,
                dst_ip=peer.local, sport=40000, dport=PORT, seq=peer.seq + k * 1400,
                ack=peer.server_isn + 1, flags="PA" if k == 7 else "A", window=65535, csum="partial",
            ).data  # fmt: skip
            mem[k * PAGE_SIZE : k * PAGE_SIZE + len(f)] = f
            h = parse_l3l4(f)
            vec.append(
                [VecPiece(k, 0, len(f))], flags=r.PKT_CSUM_PARTIAL, csum_start=h.l4_off, csum_offset=16
            )
        before = tap.stats.tx_packets
        assert tap.write_vec(vec, mem) == (2 if gro else 9)
        assert tap.stats.tx_packets - before == (2 if gro else 9)
        assert (tap.stats.gro_frames, tap.stats.gro_segments) == ((1, 8) if gro else (0, 0))
        assert recv_exactly(conn, len(payload)) == payload
    finally:
        peer.close()
    assert not tap.stats.tx_drops


# -- drops and a vanishing device ------------------------------------------------------------


def test_over_mtu_frame_from_the_kernel_is_counted_and_dropped(netns: Netns, pages: HeapPages) -> None:
    tap = open_tap(netns, offloads=False, mtu=1500)
    s = netns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tap.mtu = 1000  # our side expects 1000: the kernel's 1400-byte datagram must not pass
        netns.add_neighbor(tap.name, PEER_V4, PEER_MAC)
        s.sendto(bytes(1400), (PEER_V4, 9999))
        s.sendto(b"small", (PEER_V4, 9999))
        small = read_until(tap, pages, has_layer(UDP))
        assert bytes(Ether(small.data())[UDP].payload) == b"small"
        small.release()
    finally:
        s.close()
        tap.close()
    assert tap.stats.rx_drops == {"over_mtu": 1}
    assert asdict(tap.stats)["rx_drops"] == {"over_mtu": 1}  # what the link's JSON report uses
    assert pages.live == 0, "a dropped frame's pages were not returned"


def test_unsendable_skbs_are_counted_not_written(tap_on: tuple[Netns, Tap], pages: HeapPages) -> None:
    ns, tap = tap_on
    full = frame_skb(build_frame(payload=bytes(5000), csum="full"), pages, gso_size=1448)
    assert not tap.write_skb(full)  # GSO needs a partial checksum
    big = frame_skb(build_frame(proto="udp", payload=bytes(1600)), pages)
    assert not tap.write_skb(big)  # over the MTU without GSO
    assert not tap.write_frame(bytes(60), VnetHdr(flags=1, csum_start=70, csum_offset=6))
    full.release()
    big.release()
    assert tap.stats.tx_drops == {"vnet_gso_no_csum": 1, "over_mtu": 1, "vnet_csum_start": 1}
    assert tap.stats.tx_packets == 0 and pages.live == 0


@pytest.mark.parametrize("op", ["read", "write"])
def test_deleted_link_raises_tap_gone(netns: Netns, pages: HeapPages, op: str) -> None:
    tap = open_tap(netns)
    try:
        netns.delete_link(tap.name)
        with pytest.raises(TapGone) as e:
            if op == "read":
                tap.read_skb(pages)
            else:
                tap.write_frame(bytes(60))
        assert e.value.name == tap.name and op in str(e.value)
        assert tap.closed
        with pytest.raises(ValueError, match="closed"):
            tap.fileno()
    finally:
        tap.close()
    assert pages.live == 0


def test_read_into_says_when_it_emptied_the_tap(tap_on: tuple[Netns, Tap]) -> None:
    """``read_into`` into a vif's rx queue (the pool fast path): a call that stops at its
    budget leaves ``drained`` false (read again); one that ends on EAGAIN sets it, so the
    serve loop does not pay a failing readv before the TAP is readable again."""
    from xennet.world.local import LocalWorld

    ns, tap = tap_on
    s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with LocalWorld() as world:
        world.attach()
        vif = world.vif()
        assert vif.rx is not None
        try:
            ns.add_neighbor(tap.name, PEER_V4, PEER_MAC)
            for i in range(3):
                s.sendto(b"drain %d" % i, (PEER_V4, 9999))
            assert tap.read_into(vif.rx, budget=2) == 2
            assert not tap.drained
            got, calls = 2, 0
            while not tap.drained:  # the third datagram, and any IPv6 chatter queued with it
                got += tap.read_into(vif.rx, budget=2)
                calls += 1
                assert calls < 50
            assert tap.read_into(vif.rx) == 0 and tap.drained
        finally:
            s.close()
        vif.kick_rx()
        world.pump()
        udp = [bytes(Ether(f)[UDP].payload) for f in world.to_guest[(1, 0)] if Ether(f).haslayer(UDP)]
        assert udp == [b"drain 0", b"drain 1", b"drain 2"]
        assert len(world.to_guest[(1, 0)]) == got == tap.stats.rx_packets
