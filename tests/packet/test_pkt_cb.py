"""The typed control block, and seed 001 as tests: GSO keeps the IP block; an IPoIB hwaddr in
the cb is refused at declaration; in the headroom it survives GSO."""

from __future__ import annotations

import os

import pytest

from xennet.abi.cstruct import Array, CType, s32, u8, u16, u32
from xennet.packet.cb import (
    CB_SIZE,
    DEFAULT_REGISTRY,
    GSO_CB,
    IP_CB,
    QDISC_CB,
    CbConflict,
    CbError,
    CbRegistry,
    ControlBlock,
    default_registry,
    get_headroom,
    headroom,
    put_headroom,
)
from xennet.packet.frames import build_frame, frame_skb
from xennet.packet.gso import segment, segment_to_fit
from xennet.packet.skb import HeapPages, Piece, Skb

IPOIB_HWADDR = [("hwaddr", Array(u8, 20))]  # INFINIBAND_ALEN
ALL_ABOUT = {"qdisc", "ip", "ip6", "gso"}  # IPoIB's hwaddr must survive all of these


def test_default_layout_is_linux_like() -> None:
    r = DEFAULT_REGISTRY
    assert (r["qdisc"].offset, r["qdisc"].size) == (0, 28)
    assert (r["ip"].offset, r["ip"].size) == (0, 20)
    assert (r["ip6"].offset, r["ip6"].size) == (0, 20)
    assert (r["gso"].offset, r["gso"].end) == (32, 48)
    assert r.live_together("ip", "gso") and r.live_together("gso", "ip6")
    assert not r.live_together("ip", "qdisc")
    assert all(layer.end <= CB_SIZE for layer in r)
    assert len(r.describe()) == len(r)


def test_overlap_of_live_layers_is_refused_at_declaration() -> None:
    r = CbRegistry()
    r.declare("a", 0, [("x", u32), ("y", u32)])
    r.declare("b", 4, [("z", u32)])  # overlaps a, but never live with it: fine
    r.declare("c", 8, [("w", u32)], live_with={"a"})  # live with a, no overlap: fine
    with pytest.raises(CbConflict) as e:
        r.declare("d", 6, [("v", u16), ("q", u16)], live_with={"a"})
    msg = str(e.value)
    assert "'d'" in msg and "'a'" in msg and "bytes 6..7" in msg
    assert e.value.layers == ("d", "a") and e.value.overlap == (6, 8)
    assert "d" not in r  # nothing half-registered


def test_liveness_declared_by_the_earlier_layer_also_counts() -> None:
    r = CbRegistry()
    r.declare("early", 16, [("x", u32)], live_with={"late"})
    with pytest.raises(CbConflict, match="'late'.*'early'.*bytes 16..19"):
        r.declare("late", 12, [("a", u32), ("b", u32)])


@pytest.mark.parametrize(
    ("offset", "fields", "why"),
    [
        (40, [("a", u32), ("b", u32), ("c", u32)], "bytes 40..51"),
        (-4, [("a", u32)], "bytes -4"),
        (2, [("a", u32)], "not 4-aligned"),
        (0, [], "no fields"),
    ],
)
def test_bad_regions_are_refused(offset: int, fields: list[tuple[str, CType]], why: str) -> None:
    with pytest.raises(CbError, match=why):
        CbRegistry().declare("x", offset, fields)


def test_duplicate_layer_refused() -> None:
    r = default_registry()
    with pytest.raises(CbError, match="already declared"):
        r.declare("ip", 0, IP_CB)


def test_typed_accessors() -> None:
    cb = ControlBlock()
    ip = cb.view("ip")
    ip.write(iif=-3, flags=0x8001, frag_max_size=1500)
    ip.set("opt.faddr", 0xC0A80001)
    assert ip.get("iif") == -3 and ip.get("opt.faddr") == 0xC0A80001
    assert ip.read()["frag_max_size"] == 1500
    assert cb.raw[0:4] == (-3).to_bytes(4, "little", signed=True)  # little-endian, at IPCB's offset
    assert cb.view("gso").raw() == bytes(16)  # other regions untouched
    q = cb.view("qdisc")
    q.set("data", bytes(range(20)))
    assert q.get_bytes("data") == bytes(range(20))
    with pytest.raises(CbError, match="takes exactly 20 bytes"):
        q.set("data", b"short")
    with pytest.raises(CbError, match="use get_bytes"):
        q.get("data")
    with pytest.raises(CbError, match="no field 'nope'"):
        ip.get("nope")
    with pytest.raises(CbError, match="frag_max_size"):
        ip.set("frag_max_size", 70000)
    with pytest.raises(CbError, match="no layer 'ipoib'"):
        cb.view("ipoib")
    other = default_registry()
    with pytest.raises(CbError, match="another registry"):
        cb.view(other["ip"])
    dup = cb.copy()
    assert dup == cb and dup.raw is not cb.raw
    ip.clear()
    assert ip.get("iif") == 0 and dup.view("ip").get("iif") == -3


def tso_skb(src: HeapPages, cb: ControlBlock | None = None, head_off: int = 0) -> Skb:
    f = build_frame(payload=os.urandom(30000 - 54), ip_id=10, csum="partial")
    layout = (Piece(head_off, 600, 0), *[Piece(100, 2940, 1)] * 10)
    skb = frame_skb(f, src, layout, gso_size=1448)
    if cb is not None:
        skb.cb = cb
    return skb


def set_ipcb(cb: ControlBlock) -> dict[str, int | bytes]:
    cb.view("ip").write(iif=7, flags=0x0204, frag_max_size=1400, **{"opt.faddr": 0x0A000001, "opt.optlen": 4})
    return cb.view("ip").read()


def test_seed001_a_gso_keeps_the_ip_control_block() -> None:
    src = HeapPages()
    skb = tso_skb(src)
    original = set_ipcb(skb.control_block())
    segs = segment(skb, 1448, src)
    assert len(segs) > 1
    # GSO really used its own region of the cb (mac_offset, csum_start) ...
    assert skb.control_block().view("gso").get("csum_start") == 34
    # ... and the IP block came through in the parent and in every segment
    assert skb.control_block().view("ip").read() == original
    for s in segs:
        assert s.cb is not None and s.cb.view("ip").read() == original
        assert s.cb is not skb.cb


def test_seed001_what_the_declaration_prevents() -> None:
    """With GSO's scratch declared over IP's block, GSO does clobber it (the 2015 crash) --
    which is why saying they are live together must be refused."""
    r = CbRegistry()
    r.declare("ip", 0, IP_CB)
    r.declare("gso", 8, GSO_CB)  # overlapping, and nobody said they are live together
    src = HeapPages()
    skb = tso_skb(src, ControlBlock(r))
    original = set_ipcb(skb.control_block())
    segs = segment(skb, 1448, src)
    assert segs[0].control_block().view("ip").read() != original
    with pytest.raises(CbConflict, match="'gso'.*'ip'"):
        r2 = CbRegistry()
        r2.declare("ip", 0, IP_CB, live_with={"gso"})
        r2.declare("gso", 8, GSO_CB)


def test_seed001_b_ipoib_hwaddr_in_cb_is_refused() -> None:
    r = default_registry()
    with pytest.raises(CbConflict) as e:
        # where IPoIB put it: right after qdisc_skb_cb, bytes 28..47
        r.declare("ipoib", 28, IPOIB_HWADDR, live_with=ALL_ABOUT)
    assert e.value.layers == ("ipoib", "gso") and e.value.overlap == (32, 48)
    assert "bytes 32..47" in str(e.value)


def test_seed001_squeezing_gso_cb_is_what_it_would_take() -> None:
    """Roland's proposal: an 8-byte GSO cb at 20 would leave 28..47 to IPoIB; Alex's 10-byte
    minimum (with the running csum) at 20 would not."""
    gso8 = [("mac_offset", s32), ("encap_level", u16), ("csum_start", u16)]
    gso10 = [("mac_offset", u16), ("encap_level", u16), ("csum", u32), ("csum_start", u16)]
    for gso, ok in ((gso8, True), (gso10, False)):
        r = CbRegistry()
        r.declare("qdisc", 0, QDISC_CB)
        r.declare("ip", 0, IP_CB, live_with={"gso"})
        r.declare("gso", 20, gso, live_with={"ip"})
        if ok:
            r.declare("ipoib", 28, IPOIB_HWADDR, live_with=ALL_ABOUT)
        else:
            with pytest.raises(CbConflict, match="'ipoib'.*'gso'"):
                r.declare("ipoib", 28, IPOIB_HWADDR, live_with=ALL_ABOUT)


def test_seed001_c_ipoib_hwaddr_in_headroom_survives_gso() -> None:
    src = HeapPages()
    skb = tso_skb(src, head_off=64)
    original = set_ipcb(skb.control_block())
    hwaddr = os.urandom(20)
    put_headroom(skb, hwaddr)
    assert headroom(skb) == 64 and get_headroom(skb, 20) == hwaddr
    segs = segment(skb, 1448, src, headroom=20)
    for s in segs:
        assert headroom(s) == 20  # carried in the segment's own head page, in front of the data
        assert get_headroom(s, 20) == hwaddr
        assert s.cb is not None and s.cb.view("ip").read() == original
    assert segs.bytes_copied == sum(20 + s.head.length for s in segs)
    # the worst-case recursion carries it through every level too
    fit = segment_to_fit(skb, lambda s: s.len <= 5000, src, headroom=20)
    assert fit.depth >= 2
    assert all(get_headroom(s, 20) == hwaddr for s in fit)


def test_headroom_limits() -> None:
    src = HeapPages()
    skb = tso_skb(src, head_off=10)
    with pytest.raises(CbError, match="20 bytes wanted, the head has 10"):
        put_headroom(skb, bytes(20))
    with pytest.raises(CbError, match="the head has 10"):
        segment(skb, 1448, src, headroom=20)


def test_the_control_block_is_made_only_when_a_layer_asks() -> None:
    src = HeapPages()
    skb = tso_skb(src)
    assert skb.cb is None and skb.cb_copy() is None  # the hot path allocates none
    segs = segment(skb, 1448, src)  # GSO asks for its scratch: now the skb has one
    assert skb.cb is not None and all(s.cb is not None for s in segs)
    cb = skb.control_block()
    assert skb.control_block() is cb
