"""Checksums and frames, checked against scapy as an independent implementation."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether

from xennet.packet.csum import (
    CsumError,
    complete_partial,
    internet_checksum,
    ones_sum,
    ones_sum_chunks,
)
from xennet.packet.frames import (
    FrameError,
    build_frame,
    frame_skb,
    parse_l3l4,
    verify,
    verify_ipv4_header,
    verify_l4,
)
from xennet.packet.skb import Csum, HeapPages, Piece


def ref_sum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


def scapy_recomputed(frame: bytes) -> tuple[Ether, Ether]:
    """The frame as scapy parses it, and as scapy rebuilds it with its own checksums."""
    p = Ether(frame)
    q = Ether(frame)
    if IP in q:
        del q[IP].chksum
    del q[TCP if TCP in q else UDP].chksum
    return p, Ether(bytes(q))


@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=300))
def test_ones_sum_matches_reference_also_across_odd_chunks(a: bytes, b: bytes, c: bytes) -> None:
    assert ones_sum(a + b + c) == ref_sum(a + b + c)
    assert ones_sum_chunks([a, b, c]) == ref_sum(a + b + c)
    assert ones_sum_chunks([memoryview(a), b"", bytearray(b), c]) == ref_sum(a + b + c)


def test_negative_zero_and_zero() -> None:
    assert ones_sum(b"") == 0 and ones_sum(bytes(10)) == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert ones_sum(b"\x80\x00\x80\x00\xff\xfe") == 0xFFFF  # sums to a multiple of 0xFFFF
    assert internet_checksum(b"\x45\x00") == 0xBAFF


CASES = [(4, "tcp"), (4, "udp"), (6, "tcp"), (6, "udp")]


@pytest.mark.parametrize(("ipv", "proto"), CASES)
@pytest.mark.parametrize("size", [0, 1, 1447, 9001])
def test_built_frames_parse_in_scapy_with_right_checksums(ipv: int, proto: str, size: int) -> None:
    payload = os.urandom(size)
    f = build_frame(
        ip=ipv,
        proto=proto,
        payload=payload,
        seq=0xFFFFFF00,
        ack=77,
        flags="SA",
        ip_id=4242,
        ttl=33,
        sport=1111,
        dport=2222,
        src_mac="02:11:22:33:44:55",
    )
    p, q = scapy_recomputed(f.data)
    assert p[Ether].src == "02:11:22:33:44:55"
    l4 = p[TCP] if proto == "tcp" else p[UDP]
    assert (l4.sport, l4.dport) == (1111, 2222)
    assert bytes(l4.payload) == payload
    if ipv == 4:
        assert (p[IP].id, p[IP].ttl, p[IP].len, p[IP].flags) == (4242, 33, len(f.data) - 14, "DF")
        assert p[IP].chksum == q[IP].chksum
    else:
        assert (p[IPv6].hlim, p[IPv6].plen) == (33, len(f.data) - 54)
    if proto == "tcp":
        assert (p[TCP].seq, p[TCP].ack, p[TCP].flags) == (0xFFFFFF00, 77, "SA")
    assert l4.chksum == (q[TCP] if proto == "tcp" else q[UDP]).chksum
    assert verify(f.data)
    h = parse_l3l4(f.data)
    assert h.payload_off == len(f.data) - size and h.payload_len == size
    assert h.l4_hlen == (20 if proto == "tcp" else 8)


def test_tcp_options_are_padded_and_parsed() -> None:
    f = build_frame(payload=b"x" * 10, tcp_options=b"\x02\x04\x05\xb4\x01\x01\x01")
    h = parse_l3l4(f.data)
    assert h.l4_hlen == 28
    p, q = scapy_recomputed(f.data)
    assert p[TCP].dataofs == 7 and bytes(p[TCP].payload) == b"x" * 10
    assert p[TCP].chksum == q[TCP].chksum


@pytest.mark.parametrize(("ipv", "proto"), CASES)
def test_partial_completion_equals_scapy(ipv: int, proto: str) -> None:
    payload = os.urandom(20001)
    full = build_frame(ip=ipv, proto=proto, payload=payload)
    part = build_frame(ip=ipv, proto=proto, payload=payload, csum="partial")
    assert part.csum is Csum.PARTIAL
    assert part.csum_start == part.headers.l4_off
    assert part.csum_offset == (16 if proto == "tcp" else 6)
    # the field holds the pseudo-header sum, not a checksum (comparing the field itself: a
    # random payload makes the frame verify anyway once in 65536)
    field_value = int.from_bytes(part.data[part.csum_start + part.csum_offset :][:2], "big")
    assert field_value == part.headers.pseudo_sum()
    # odd offsets, compound pages, the checksum field split across two bufs
    field = part.csum_start + part.csum_offset
    lens = [field + 1, 3333, 4097, len(part.data) - field - 1 - 3333 - 4097]
    layout = (Piece(4095, lens[0], 1), Piece(1, lens[1], 0), Piece(4095, lens[2], 1), Piece(7, lens[3], 4))
    src = HeapPages()
    skb = frame_skb(part, src, layout)
    assert complete_partial(skb)
    assert skb.csum is Csum.NONE
    out = skb.data()
    assert verify(out)
    assert out == full.data
    _, q = scapy_recomputed(out)
    assert Ether(out)[TCP if proto == "tcp" else UDP].chksum == q[TCP if proto == "tcp" else UDP].chksum
    assert not complete_partial(skb)  # nothing left to do


def test_complete_partial_refuses_field_outside_packet() -> None:
    src = HeapPages()
    skb = frame_skb(build_frame(payload=b"ab", csum="partial"), src)
    skb.csum_offset = skb.len
    with pytest.raises(CsumError, match="csum_offset"):
        complete_partial(skb)


def test_verify_catches_corruption() -> None:
    f = bytearray(build_frame(payload=b"hello world").data)
    assert verify(f)
    f[-1] ^= 1
    assert not verify_l4(f) and verify_ipv4_header(f)
    f[-1] ^= 1
    f[14 + 8] -= 1  # ttl
    assert not verify_ipv4_header(f) and not verify(f)


def test_parse_accepts_vlan_and_scapy_frames() -> None:
    frame = bytes(
        Ether()
        / Dot1Q(vlan=5)
        / IPv6(src="fd00::5", dst="fd00::6")
        / TCP(options=[("NOP", None)] * 4)
        / b"zz"
    )
    h = parse_l3l4(frame)
    assert (h.l3_off, h.ip_version, h.l4_off, h.l4_hlen, h.payload_len) == (18, 6, 58, 24, 2)
    assert verify(frame)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (bytes(Ether() / ARP()), "ethertype 0x0806"),
        (bytes(Ether() / IP(options=b"\x01\x01\x01\x00") / TCP()), "IP options"),
        (bytes(Ether() / IP(flags="MF") / UDP()), "fragment"),
        (bytes(Ether() / IPv6() / IPv6ExtHdrHopByHop() / TCP()), "extension headers"),
        (bytes(Ether() / IP() / TCP())[:40], "too short for the TCP header"),
        (bytes(Ether() / IP(len=200) / TCP()), "length the IP header claims"),
        (bytes(Ether() / IP(proto=1) / (b"\0" * 8)), "only TCP and UDP"),
    ],
)
def test_parse_refuses_clearly(frame: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        parse_l3l4(frame)


def test_headers_only_parse_for_header_pull() -> None:
    f = build_frame(payload=b"q" * 1000)
    h = parse_l3l4(f.data[:54], headers_only=True)
    assert h.payload_off == 54 and h.payload_len == 1000
    with pytest.raises(FrameError):
        parse_l3l4(f.data[:54])


def test_build_refuses_bad_arguments() -> None:
    with pytest.raises(FrameError, match="not an IPv6"):
        build_frame(ip=6, src_ip="10.0.0.1")
    with pytest.raises(FrameError, match="at most 65535"):
        build_frame(payload=bytes(65535))
    with pytest.raises(FrameError, match="flag letter"):
        build_frame(flags="Z")
    with pytest.raises(FrameError, match="out of range"):
        build_frame(sport=70000)


@settings(max_examples=40, deadline=None)
@given(
    st.binary(min_size=0, max_size=3000),
    st.sampled_from(CASES),
    st.sampled_from(["full", "partial"]),
)
def test_property_scapy_agrees(payload: bytes, case: tuple[int, str], mode: str) -> None:
    ipv, proto = case
    f = build_frame(ip=ipv, proto=proto, payload=payload, csum=mode)
    skb = frame_skb(f, HeapPages())
    complete_partial(skb)
    out = skb.data()
    p, q = scapy_recomputed(out)
    l4 = TCP if proto == "tcp" else UDP
    mine, theirs = p[l4].chksum, q[l4].chksum
    # 0 and 0xFFFF are the same one's complement value; we store 0xFFFF like Linux
    assert mine == theirs or {mine, theirs} == {0, 0xFFFF}
    assert verify(out)
