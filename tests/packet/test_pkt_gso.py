"""Software GSO, checked segment by segment with scapy, and seed 000's recursive re-segmentation."""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from xennet.packet.csum import complete_partial
from xennet.packet.frames import BuiltFrame, build_frame, frame_skb, parse_l3l4, verify
from xennet.packet.gso import GsoError, Segments, segment, segment_to_fit, split_size
from xennet.packet.skb import GSO_NONE, GSO_TCPV6, Csum, Foreign, HeapPages, Layout, Piece, Skb

PAGE = 4096
FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


def frags_layout(head: Piece, rest: int, n: int, off: int, order: int) -> Layout:
    """``head`` then ``rest`` bytes spread over ``n`` frags at ``off`` in pages of ``order``."""
    base, extra = divmod(rest, n)
    frags = [Piece(off, base + (i < extra), order) for i in range(n)]
    return (head, *frags)


def check_segments(parent: BuiltFrame, segs: list[Skb], mss: int | None) -> None:
    """Everything a receiver would check, via scapy (independent of our parser)."""
    orig = Ether(parent.data)
    ipv = 4 if IP in orig else 6
    payload = parent.data[parent.headers.payload_off :]
    hlen = parent.headers.payload_off
    flags = int(orig[TCP].flags)
    got = b""
    for i, s in enumerate(segs):
        assert (s.gso_size, s.gso_type) == (0, GSO_NONE)
        if parent.csum is Csum.PARTIAL:
            assert s.csum is Csum.PARTIAL
            assert (s.csum_start, s.csum_offset) == (parent.headers.l4_off, 16)
            # the field holds exactly this segment's pseudo-header sum (a checksum that happens
            # to verify anyway is possible, 1 in 65536, so compare the field itself)
            sd = s.data()
            sh = parse_l3l4(sd)
            assert struct.unpack_from("!H", sd, sh.l4_off + 16)[0] == sh.pseudo_sum()
            complete_partial(s)
        data = s.data()
        p = Ether(data)
        chunk = bytes(p[TCP].payload)
        assert len(data) == hlen + len(chunk)
        if mss is not None:  # all full but the last (which is non-empty unless there is no payload)
            assert len(chunk) == mss or (i == len(segs) - 1 and 0 < len(chunk) <= mss) or not payload
        assert p[TCP].seq == (orig[TCP].seq + len(got)) % 2**32
        want = flags
        if i != len(segs) - 1:
            want &= ~(FLAG_BITS["F"] | FLAG_BITS["P"])
        if i != 0:
            want &= ~FLAG_BITS["C"]
        assert int(p[TCP].flags) == want
        assert (p[TCP].ack, p[TCP].window, p[TCP].options) == (
            orig[TCP].ack,
            orig[TCP].window,
            orig[TCP].options,
        )
        q = Ether(data)
        del q[TCP].chksum
        if ipv == 4:
            assert p[IP].len == len(data) - 14
            assert p[IP].id == (orig[IP].id + i) % 2**16
            assert (p[IP].flags, p[IP].ttl, p[IP].src, p[IP].dst) == (
                orig[IP].flags,
                orig[IP].ttl,
                orig[IP].src,
                orig[IP].dst,
            )
            del q[IP].chksum
            q = Ether(bytes(q))
            assert p[IP].chksum == q[IP].chksum
        else:
            assert p[IPv6].plen == len(data) - 54
            q = Ether(bytes(q))
        assert p[TCP].chksum == q[TCP].chksum
        assert verify(data)
        got += chunk
    assert got == payload


def tso_frame(ipv: int, payload_len: int, csum: str = "full") -> BuiltFrame:
    return build_frame(
        ip=ipv,
        payload=os.urandom(payload_len),
        seq=0xFFFFF000,
        ack=99,
        ip_id=0xFFFE,
        flags="FPAC",
        tcp_options=b"\x01\x01\x08\x0a" + bytes(8),
        csum=csum,
    )


LAYOUTS: dict[str, Callable[[int], Layout | None]] = {
    # everything in one order-4 compound head (crossing 15 boundaries): all payload copied
    "head_only": lambda total: (Piece(100, total, 4),) if total + 100 <= 16 * PAGE else None,
    # seed 000's shape: a 70-byte head across a boundary, frags crossing 4 KiB on compound pages
    "frag_heavy": lambda total: frags_layout(Piece(PAGE - 35, 70, 1), total - 70, 17, PAGE - 1, 2),
    # headers themselves split between head and first frag
    "split_headers": lambda total: frags_layout(Piece(PAGE - 20, 30, 1), total - 30, 9, 2 * PAGE - 7, 3),
    # payload partly in the head (copied), partly in frags (referenced)
    "mixed": lambda total: frags_layout(Piece(123, 7000, 1), total - 7000, 12, 4000, 2),
}


@pytest.mark.parametrize("ipv", [4, 6])
@pytest.mark.parametrize("csum", ["full", "partial"])
@pytest.mark.parametrize("shape", list(LAYOUTS))
def test_tso_64k_segments_pass_scapy(ipv: int, csum: str, shape: str) -> None:
    hlen = 14 + (20 if ipv == 4 else 40) + 32
    f = tso_frame(ipv, 65535 - hlen - (200 if shape == "head_only" else 0), csum)
    layout = LAYOUTS[shape](len(f.data))
    assert layout is not None
    src = HeapPages()
    skb = frame_skb(f, src, layout, gso_size=1448)
    before = src.live
    segs = segment(skb, 1448, src)
    assert isinstance(segs, Segments) and segs.depth == 1
    assert len(segs) == -(-(len(f.data) - hlen) // 1448)
    # what was copied: each segment's whole head (headers + payload that sat in the parent's head)
    assert segs.bytes_copied == sum(s.head.length for s in segs)
    head_payload = max(0, layout[0].length - hlen)
    assert segs.bytes_copied == len(segs) * hlen + head_payload
    # ownership: one new page per segment; frags reference the parent's pages, not copies
    assert src.live == before + len(segs)
    parent_pages = {id(p) for p in skb.pages}
    for s in segs:
        assert len(s.pages) == 1 and s.pages[0] is s.head.page
        assert all(id(fr.page) in parent_pages for fr in s.frags)
    check_segments(f, segs, 1448)
    for s in segs:
        s.free(src)
    assert src.live == before
    skb.free(src)
    assert src.live == 0


def test_frags_are_references_not_copies() -> None:
    f = tso_frame(4, 20000)
    src = HeapPages()
    skb = frame_skb(f, src, frags_layout(Piece(0, 86, 0), len(f.data) - 86, 5, 100, 1), gso_size=1000)
    segs = segment(skb, 1000, src)
    last = segs[-1]
    before = last.data()
    skb.frags[-1].view[-1] ^= 0xFF  # change the parent's page: the segment sees it
    assert last.data()[:-1] == before[:-1] and last.data()[-1] == before[-1] ^ 0xFF


def test_foreign_frags_keep_their_grant_offsets() -> None:
    f = tso_frame(6, 30000)
    src = HeapPages()
    skb = frame_skb(f, src, frags_layout(Piece(0, 106, 0), len(f.data) - 106, 8, 4000, 1), gso_size=1448)
    skb.frags = [
        dataclasses.replace(b, foreign=Foreign(7, 100 + i, b.offset)) for i, b in enumerate(skb.frags)
    ]
    for s in segment(skb, 1448, src):
        for fr in s.frags:
            assert fr.foreign is not None and fr.foreign.domid == 7
            assert fr.foreign.offset == fr.offset  # moved along with the buf's own offset


def test_gso_type_and_shape_checks() -> None:
    src = HeapPages()
    udp = frame_skb(build_frame(proto="udp", payload=bytes(3000)), src)
    with pytest.raises(GsoError, match="not TCP"):
        segment(udp, 1000, src)
    tcp = frame_skb(tso_frame(4, 3000), src)
    for bad in (0, -5):
        with pytest.raises(GsoError, match="mss"):
            segment(tcp, bad, src)
    tcp.gso_type = GSO_TCPV6
    with pytest.raises(GsoError, match="TCPv6"):
        segment(tcp, 1000, src)
    padded = frame_skb(dataclasses.replace(tso_frame(4, 10), data=tso_frame(4, 10).data + bytes(6)), src)
    with pytest.raises(GsoError, match="IP header says"):
        segment(padded, 1000, src)


def test_small_and_empty_payloads() -> None:
    src = HeapPages()
    f = tso_frame(4, 0)
    segs = segment(frame_skb(f, src), 1448, src)
    assert len(segs) == 1 and segs[0].data() == f.data  # a bare ACK comes back unchanged
    f = tso_frame(6, 5)
    segs = segment(frame_skb(f, src), 1, src)
    assert len(segs) == 5
    check_segments(f, segs, 1)


@st.composite
def frame_and_layout(draw: st.DrawFn) -> tuple[BuiltFrame, Layout, int]:
    ipv = draw(st.sampled_from([4, 6]))
    mss = draw(st.integers(1, 3000))
    size = draw(st.integers(0, min(60000, mss * 40)))
    f = build_frame(
        ip=ipv,
        payload=draw(st.binary(min_size=size, max_size=size)) if size < 64 else os.urandom(size),
        seq=draw(st.integers(0, 2**32 - 1)),
        ip_id=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.sampled_from(["A", "PA", "FPA", "CA"])),
        csum=draw(st.sampled_from(["full", "partial"])),
    )
    total = len(f.data)
    nbufs = draw(st.integers(1, min(18, total)))
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), min_size=nbufs - 1, max_size=nbufs - 1)))
    bounds = [0, *cuts, total]
    pieces = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        n = b - a
        min_order = max(0, (n - 1) // PAGE).bit_length()
        order = draw(st.integers(min_order, 4))
        pieces.append(Piece(draw(st.integers(0, (PAGE << order) - n)), n, order))
    return f, tuple(pieces), mss


@settings(max_examples=60, deadline=None)
@given(frame_and_layout())
def test_property_segments_reassemble(case: tuple[BuiltFrame, Layout, int]) -> None:
    f, layout, mss = case
    src = HeapPages()
    skb = frame_skb(f, src, layout, gso_size=mss)
    segs = segment(skb, mss, src)
    hlen = f.headers.payload_off
    assert b"".join(s.data()[hlen:] for s in segs) == f.data[hlen:]
    assert all(s.len - hlen <= mss for s in segs)
    assert all(len(s.frags) <= 17 for s in segs)
    for s in segs:
        complete_partial(s)
        assert verify(s.data())
        s.free(src)
    skb.free(src)
    assert src.live == 0


# --- seed 000: re-segment with gso_size = len/2 + 1 until each piece fits the ring ---

WORST = (Piece(PAGE - 35, 70, 1), *([Piece(PAGE - 1, PAGE + 2, 2)] * 15), *([Piece(PAGE - 1, 2, 1)] * 2))


def fits18(s: Skb) -> bool:
    return s.slots() <= 18


@pytest.mark.parametrize("csum", ["full", "partial"])
def test_worst_case_51_slots_fits_after_recursion(csum: str) -> None:
    total = sum(p.length for p in WORST)
    f = build_frame(payload=os.urandom(total - 54), seq=5, ip_id=1, flags="PA", csum=csum)
    src = HeapPages()
    skb = frame_skb(f, src, WORST, gso_size=1448)
    assert skb.slots() == 51
    out = segment_to_fit(skb, fits18, src)
    # two levels of segmentation = seed 000's "3 level recursion" of start_xmit calls
    assert out.depth == 2
    assert all(s.slots() <= 18 for s in out)
    assert [s.slots() for s in out] == [12, 14, 14, 16]
    # intermediate segments were freed: only the final pieces' heads are live besides the parent
    assert src.live == len(skb.pages) + len(out)
    assert out.bytes_copied == 6 * 54 + 2 * 16  # 2 + 4 headers, the head's 16 payload bytes twice
    seqs = [Ether(s.data())[TCP].seq for s in out]
    assert seqs == sorted(seqs) and seqs[0] == 5
    check_segments(f, list(out), None)


def test_fitting_packet_is_returned_as_is() -> None:
    src = HeapPages()
    skb = frame_skb(tso_frame(4, 9000), src, gso_size=1448)
    out = segment_to_fit(skb, fits18, src)
    assert list(out) == [skb] and out[0] is skb and out.depth == 0 and out.bytes_copied == 0


def test_split_size_rule() -> None:
    src = HeapPages()
    skb = frame_skb(build_frame(payload=bytes(10000)), src)
    assert split_size(skb) == skb.len // 2 + 1 == 5028
    tiny = frame_skb(build_frame(payload=bytes(10)), src)  # len 64: 33 would not split 10 bytes
    assert split_size(tiny) == 5


def test_no_progress_is_refused_without_leaks() -> None:
    src = HeapPages()
    skb = frame_skb(tso_frame(4, 5000), src, WORST[:1] + (Piece(0, 5000 + 66 - 70, 1),))
    live = src.live
    with pytest.raises(GsoError, match="segmentation cannot help"):
        segment_to_fit(skb, lambda s: False, src, max_depth=64)
    assert src.live == live
    with pytest.raises(GsoError, match="after 2 levels"):
        segment_to_fit(skb, lambda s: s.len < 100, src, max_depth=2)
    assert src.live == live
