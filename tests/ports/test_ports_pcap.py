"""The pcap writer, read back by our reader, scapy's rdpcap and ``tcpdump -r``."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from xennet.packet.frames import build_frame, frame_skb, parse_l3l4, verify
from xennet.packet.skb import HeapPages
from xennet.ports.pcap import LINKTYPE_ETHERNET, PcapError, PcapWriter, completed_frame, read_pcap

TS = 1_700_000_000.123456
ARP_FRAME = bytes(
    Ether(src="02:13:00:00:00:02", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.213.0.2", pdst="10.213.0.1")
)


def test_global_header_is_classic_pcap(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    with PcapWriter(p):
        pass
    magic, major, minor, zone, sigfigs, snaplen, link = struct.unpack("=IHHiIII", p.read_bytes())
    assert (magic, major, minor, zone, sigfigs, snaplen, link) == (
        0xA1B2C3D4,
        2,
        4,
        0,
        0,
        65535,
        LINKTYPE_ETHERNET,
    )


def test_frames_round_trip_with_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    udp = build_frame(proto="udp", payload=b"hello", src_ip="10.213.0.1", dst_ip="10.213.0.2").data
    with PcapWriter(p) as w:
        w.write(ARP_FRAME, ts=TS)
        w.write([udp[:20], memoryview(udp)[20:]], ts=TS + 1)  # several buffers, one frame
        assert w.frames == 2
    recs = list(read_pcap(p))
    assert [r.data for r in recs] == [ARP_FRAME, udp]
    assert [r.orig_len for r in recs] == [len(ARP_FRAME), len(udp)]
    assert recs[0].ts_ns == 1_700_000_000_123_456_000
    pk = rdpcap(str(p))
    assert [bytes(x) for x in pk] == [ARP_FRAME, udp]
    assert float(pk[0].time) == pytest.approx(TS, abs=1e-6)
    assert pk[1][UDP].load == b"hello"


def test_snaplen_truncates_but_keeps_the_original_length(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    big = build_frame(payload=bytes(3000)).data
    with PcapWriter(p, snaplen=128) as w:
        w.write(big)
    (r,) = read_pcap(p)
    assert r.data == big[:128] and r.orig_len == len(big)
    assert len(rdpcap(str(p))[0]) == 128


def test_writer_on_an_open_file_and_bad_input() -> None:
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        w.write(ARP_FRAME)
    assert not buf.closed
    buf.seek(0)
    assert [r.data for r in read_pcap(buf)] == [ARP_FRAME]
    with pytest.raises(PcapError):
        list(read_pcap(io.BytesIO(b"\0" * 24)))
    with pytest.raises(PcapError):
        PcapWriter(io.BytesIO(), snaplen=0)


def test_gso_frame_as_carried_and_as_it_left(tmp_path: Path) -> None:
    pages = HeapPages()
    f = build_frame(payload=bytes(range(256)) * 40, csum="partial", src_ip="10.213.0.1", dst_ip="10.213.0.2")
    skb = frame_skb(f, pages, gso_size=1448)
    p = tmp_path / "gso.pcap"
    with PcapWriter(p) as w:
        w.write_skb(skb, ts=TS)
        assert w.write_segmented(skb, pages, ts=TS) == 8  # 10240 bytes / 1448
    assert pages.live == len(skb.pages), "segment heads not returned"
    recs = list(read_pcap(p))
    assert recs[0].data == f.data and len(recs[0].data) > 1514  # as the ring carried it: one frame
    segs = [r.data for r in recs[1:]]
    assert all(len(s) <= 1514 and verify(s) for s in segs)  # as they left: wire-ready
    payload = b"".join(s[parse_l3l4(s).payload_off :] for s in segs)
    assert payload == bytes(range(256)) * 40
    pk = rdpcap(str(p))
    assert len(pk) == 9 and pk[0][IP].len == len(f.data) - 14
    assert [x[TCP].seq for x in pk[1:]] == [i * 1448 for i in range(8)]
    assert str(pk[-1][TCP].flags) == "PA" and str(pk[1][TCP].flags) == "A"
    assert skb.data() == f.data, "writing must not change the skb"
    skb.release()
    assert pages.live == 0


def test_completed_frame_copies(tmp_path: Path) -> None:
    pages = HeapPages()
    f = build_frame(proto="udp", payload=b"x" * 100, csum="partial")
    skb = frame_skb(f, pages)
    out = completed_frame(skb)
    assert verify(out) and not verify(skb.data()) and skb.data() == f.data
    skb.release()


def test_tcpdump_reads_it(tmp_path: Path) -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed (apt-get install tcpdump)")
    pages = HeapPages()
    f = build_frame(payload=bytes(5000), csum="partial", src_ip="10.213.0.1", dst_ip="10.213.0.2")
    skb = frame_skb(f, pages, gso_size=1448)
    p = tmp_path / "t.pcap"
    with PcapWriter(p) as w:
        w.write(ARP_FRAME, ts=TS)
        w.write_skb(skb, ts=TS)
        w.write_segmented(skb, pages, ts=TS)
    skb.release()
    r = subprocess.run(
        [tcpdump, "-r", str(p), "-nn", "-vv", "-tt"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    # -vv: one block per frame, starting with its timestamp (IP frames take two lines)
    blocks = ["1700000000.123456" + b for b in r.stdout.split("1700000000.123456")[1:]]
    assert len(blocks) == 1 + 1 + 4, r.stdout
    assert "ARP" in blocks[0] and "who-has 10.213.0.1 tell 10.213.0.2" in blocks[0]
    assert all("10.213.0.1.40000 > 10.213.0.2.5001" in b for b in blocks[1:])
    assert "length 5040" in blocks[1] and "seq 0:5000" in blocks[1]  # as carried: one frame
    assert "incorrect" in blocks[1]  # its checksum field holds the pseudo-header sum (PARTIAL)
    assert [b.count("(correct)") for b in blocks[2:]] == [1, 1, 1, 1], "segments as they left"
    assert "seq 4344:5000" in blocks[-1]
