"""GRO's plan and merged headers (``packet.gro``), checked with scapy: a merged frame is a valid
TCP frame (IPv4 or IPv6) carrying exactly its segments' bytes, and anything Linux would not
merge stays apart."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether

from xennet.packet import gro
from xennet.packet.csum import internet_checksum, ones_sum
from xennet.packet.frames import build_frame
from xennet.packet.skb import GSO_TCPV4, GSO_TCPV6

MSS = 1448
TS = b"\x01\x01\x08\x0a\x00\x00\x10\x00\x00\x00\x20\x00"  # NOP NOP timestamps


def seg(seq: int, n: int = MSS, **kw: Any) -> bytes:
    args: dict[str, Any] = {"payload": bytes((seq + i) & 0xFF for i in range(n)), "seq": seq, "ack": 77}
    args |= {"tcp_options": TS, "flags": "A"} | kw
    return build_frame(**args).data


def segs_of(frames: list[bytes], gso: int = 0) -> list[gro.Seg | None]:
    return [gro.seg_of(memoryview(f), len(f), gso) for f in frames]


def merge(frames: list[bytes]) -> bytes:
    """What the TAP writes for ``frames`` as one run: the rewritten header, then each payload."""
    ss = segs_of(frames)
    first = ss[0]
    assert first is not None and all(s is not None for s in ss)
    payload = sum(s[3] for s in ss if s)
    psh = any(s[5] for s in ss if s)
    head = gro.merged_header(memoryview(frames[0]), first, payload, psh)
    return bytes(head) + b"".join(f[first[2] :] for f in frames)


@pytest.mark.parametrize("ip", [4, 6])
def test_a_run_of_in_order_segments_becomes_one_valid_frame(ip: int) -> None:
    frames = [seg(1000 + k * MSS, ip=ip) for k in range(10)]
    assert gro.plan(segs_of(frames)) == [10]
    first = segs_of(frames)[0]
    assert first is not None and first[6:] == ((34, GSO_TCPV4) if ip == 4 else (54, GSO_TCPV6))
    out = Ether(merge(frames))
    tcp = out[TCP]
    if ip == 4:
        assert out[IP].len == len(out) - 14 and out[IP].flags == "DF" and out[IP].ttl == 64
        fresh = IP(bytes(out[IP]))
        del fresh.chksum
        assert IP(bytes(fresh)).chksum == out[IP].chksum  # scapy computes the same header checksum
    else:
        assert out[IPv6].plen == len(out) - 54 and out[IPv6].nh == 6
    assert tcp.seq == 1000 and tcp.ack == 77 and tcp.flags == "A"
    assert bytes(tcp.payload) == b"".join(bytes(Ether(f)[TCP].payload) for f in frames)
    # checksum-partial: completing the field over the TCP bytes gives scapy's full checksum
    full = internet_checksum(bytes(out)[first[6] :])  # the field holds the pseudo-header sum
    ref = Ether(bytes(out))
    del ref[TCP].chksum
    assert Ether(bytes(ref))[TCP].chksum == full


def test_psh_in_the_middle_merges_and_marks_the_frame() -> None:
    frames = [seg(0), seg(MSS, flags="PA"), seg(2 * MSS)]
    assert gro.plan(segs_of(frames)) == [3]
    assert Ether(merge(frames))[TCP].flags == "PA"


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (dict(sport=40001), "another flow"),
        (dict(seq=MSS + 1), "a gap"),
        (dict(ack=78), "another ACK number"),
        (dict(window=1000), "another window"),
        (dict(tcp_options=TS[:-1] + b"\x01"), "other options (a newer timestamp)"),
        (dict(flags="FA"), "FIN"),
        (dict(flags="RA"), "RST"),
        (dict(flags="UA"), "URG"),
        (dict(ttl=63), "another TTL"),
        (dict(df=False), "DF differs"),
        (dict(dst_mac="02:00:00:00:00:09"), "another Ethernet header"),
    ],
)
def test_what_linux_would_not_merge_stays_apart(second: dict[str, Any], why: str) -> None:
    frames = [seg(0), seg(second.pop("seq", MSS), **second)]
    assert gro.plan(segs_of(frames)) == [1, 1], why


@pytest.mark.parametrize(
    "frame",
    [
        build_frame(payload=bytes(500), flags="S").data,
        build_frame(payload=bytes(500), flags="P").data,  # no ACK
        bytes(Ether() / IPv6() / IPv6ExtHdrHopByHop() / TCP(flags="A") / bytes(500)),
        build_frame(proto="udp", payload=bytes(500)).data,
        build_frame(payload=b"", flags="A").data,  # a pure ACK
    ],
    ids=["syn", "no-ack", "ipv6-extension-header", "udp", "pure-ack"],
)
def test_frames_gro_does_not_take(frame: bytes) -> None:
    assert gro.seg_of(memoryview(frame), len(frame), 0) is None


def test_a_gso_type_of_the_other_ip_version_is_not_taken() -> None:
    v4, v6 = seg(0, 2 * MSS), seg(0, 2 * MSS, ip=6)
    assert gro.seg_of(memoryview(v4), len(v4), MSS, GSO_TCPV4) is not None
    assert gro.seg_of(memoryview(v4), len(v4), MSS, GSO_TCPV6) is None
    assert gro.seg_of(memoryview(v6), len(v6), MSS, GSO_TCPV4) is None


def test_ip_options_fragments_and_padding_are_not_taken() -> None:
    f = bytearray(seg(0))
    frag = bytearray(f)
    frag[20] |= 0x20  # MF
    assert gro.seg_of(memoryview(frag), len(frag), 0) is None
    padded = bytes(f) + bytes(6)  # an IP length short of the frame
    assert gro.seg_of(memoryview(padded), len(padded), 0) is None
    opts = bytearray(f)
    opts[14] = 0x46
    assert gro.seg_of(memoryview(opts), len(opts), 0) is None
    cut = memoryview(bytes(f))[:40]  # headers not all in the first piece
    assert gro.seg_of(cut, len(f), 0) is None


def test_a_short_segment_ends_its_run() -> None:
    frames = [seg(0), seg(MSS, 700), seg(MSS + 700)]
    assert gro.plan(segs_of(frames)) == [2, 1]
    # the first sets the MSS: a longer one after it does not join
    assert gro.plan(segs_of([seg(0, 1000), seg(1000)])) == [1, 1]


def test_gso_segments_merge_only_with_their_own_gso_size() -> None:
    def s(f: bytes, gso: int) -> gro.Seg | None:
        return gro.seg_of(memoryview(f), len(f), gso)

    a, b = seg(0, 3 * MSS), seg(3 * MSS, 2 * MSS)
    assert gro.plan([s(a, MSS), s(b, MSS)]) == [2]
    assert gro.plan([s(a, MSS), s(b, 1400)]) == [1, 1]
    assert gro.plan([s(a, MSS), s(seg(3 * MSS), 0)]) == [2]  # a plain segment of the run's MSS


def test_a_merged_frame_stays_within_the_limit() -> None:
    frames = [seg(k * MSS) for k in range(60)]
    runs = gro.plan(segs_of(frames))
    assert sum(runs) == 60 and len(runs) == 2
    assert len(merge(frames[: runs[0]])) <= 0xFFFF < len(merge(frames[: runs[0]])) + MSS
    assert gro.plan(segs_of(frames[:5]), max_len=3 * MSS + 100) == [3, 2]  # 78 header bytes + 3 payloads fit


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """Segments of two flows, interleaved, with gaps, short tails and pure ACKs."""
    ip = draw(st.sampled_from([4, 6]))
    seqs = {40000: 5000, 40001: 0xFFFFF000}  # one flow wraps its sequence numbers
    out = []
    for _ in range(draw(st.integers(1, 24))):
        port = draw(st.sampled_from([40000, 40001]))
        n = draw(st.sampled_from([MSS, MSS, MSS, 600, 0]))
        seqs[port] = (seqs[port] + draw(st.sampled_from([0, 0, 0, 1]))) & 0xFFFFFFFF
        flags = draw(st.sampled_from(["A", "A", "PA"]))
        out.append(seg(seqs[port], n, sport=port, flags=flags, ip=ip))
        seqs[port] = (seqs[port] + n) & 0xFFFFFFFF
    return out


@given(streams())
def test_every_run_is_one_flow_in_order_and_keeps_every_byte(frames: list[bytes]) -> None:
    runs = gro.plan(segs_of(frames))
    assert sum(runs) == len(frames) and all(k >= 1 for k in runs)
    i = 0
    for k in runs:
        group = frames[i : i + k]
        i += k
        if k == 1:
            continue
        out = Ether(merge(group))
        firsts = [Ether(f)[TCP] for f in group]
        assert len({(t.sport, t.dport) for t in firsts}) == 1
        for a, b in zip(firsts, firsts[1:], strict=False):
            assert (a.seq + len(a.payload)) & 0xFFFFFFFF == b.seq
        mss = len(firsts[0].payload)  # the run's MSS: the first sets it, all but the last carry it
        assert all(len(t.payload) == mss for t in firsts[:-1]) and len(firsts[-1].payload) <= mss
        assert bytes(out[TCP].payload) == b"".join(bytes(t.payload) for t in firsts)
        if out.haslayer(IP):
            assert out[IP].len == len(out) - 14
            assert ones_sum(bytes(out)[14:34]) == 0xFFFF  # a valid IPv4 header checksum
        else:
            assert out[IPv6].plen == len(out) - 54
