"""The virtio-net header and its translation to and from skb offload state (pure)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xennet.packet.frames import build_frame, frame_skb
from xennet.packet.skb import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    MAX_PACKET,
    Csum,
    HeapPages,
    build_skb,
    linear_layout,
)
from xennet.ports import vnet
from xennet.ports.vnet import (
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VNET_HDR_LEN,
    Offload,
    VnetError,
    VnetHdr,
)

NEEDS, VALID = VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_DATA_VALID
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)


def test_wire_layout_is_little_endian_and_10_bytes() -> None:
    h = VnetHdr(flags=1, gso_type=4, hdr_len=0x0102, gso_size=0x0304, csum_start=0x0506, csum_offset=0x0708)
    assert h.pack() == bytes([1, 4, 2, 1, 4, 3, 6, 5, 8, 7])
    assert len(VnetHdr().pack()) == VNET_HDR_LEN == 10
    assert VnetHdr.unpack(h.pack() + b"extra") == h


@given(u8, u8, u16, u16, u16, u16)
def test_pack_unpack_round_trip(f: int, g: int, hl: int, gs: int, cs: int, co: int) -> None:
    h = VnetHdr(f, g, hl, gs, cs, co)
    assert VnetHdr.unpack(h.pack()) == h


def test_field_out_of_range_is_a_vnet_error() -> None:
    with pytest.raises(VnetError) as e:
        VnetHdr(csum_start=0x10000).pack()
    assert e.value.reason == "vnet_field_range"
    with pytest.raises(VnetError) as e:
        VnetHdr.unpack(b"\0" * 9)
    assert e.value.reason == "vnet_short"


# -- to skb state ----------------------------------------------------------------------------


def test_plain_frame_has_no_offload() -> None:
    assert vnet.to_offload(VnetHdr(), 60) == Offload()


def test_needs_csum_gives_partial() -> None:
    o = vnet.to_offload(VnetHdr(NEEDS, csum_start=34, csum_offset=16), 100)
    assert o == Offload(Csum.PARTIAL, 34, 16, GSO_NONE, 0)


def test_data_valid_gives_unnecessary() -> None:
    assert vnet.to_offload(VnetHdr(VALID), 100).csum is Csum.UNNECESSARY


@pytest.mark.parametrize(
    ("vt", "st_"), [(VIRTIO_NET_HDR_GSO_TCPV4, GSO_TCPV4), (VIRTIO_NET_HDR_GSO_TCPV6, GSO_TCPV6)]
)
def test_tcp_gso_maps_to_skb_gso(vt: int, st_: int) -> None:
    h = VnetHdr(NEEDS, vt, hdr_len=54, gso_size=1448, csum_start=34, csum_offset=16)
    assert vnet.to_offload(h, 30000) == Offload(Csum.PARTIAL, 34, 16, st_, 1448)


MALFORMED = [
    (VnetHdr(flags=4), 100, "vnet_flags"),  # RSC_INFO: never from a TAP
    (VnetHdr(flags=0x80), 100, "vnet_flags"),
    (VnetHdr(flags=NEEDS | VALID, csum_start=34, csum_offset=16), 100, "vnet_flags"),
    (VnetHdr(NEEDS, csum_start=100, csum_offset=0), 100, "vnet_csum_start"),  # start at the end
    (VnetHdr(NEEDS, csum_start=5000, csum_offset=6), 100, "vnet_csum_start"),
    (VnetHdr(NEEDS, csum_start=4, csum_offset=6), 100, "vnet_csum_start"),  # inside the MAC header
    (VnetHdr(NEEDS, csum_start=34, csum_offset=65), 100, "vnet_csum_offset"),  # 34+65+2 = 101
    (VnetHdr(NEEDS, csum_start=98, csum_offset=1), 100, "vnet_csum_offset"),
    (VnetHdr(NEEDS, VIRTIO_NET_HDR_GSO_UDP, 42, 1472, 34, 6), 9000, "vnet_gso_type"),  # UFO
    (VnetHdr(NEEDS, 5, 42, 1472, 34, 6), 9000, "vnet_gso_type"),  # UDP L4 GSO
    (VnetHdr(NEEDS, 2, 54, 1448, 34, 16), 9000, "vnet_gso_type"),  # unknown type
    (
        VnetHdr(NEEDS, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 54, 1448, 34, 16),
        9000,
        "vnet_gso_type",
    ),
    (VnetHdr(NEEDS, VIRTIO_NET_HDR_GSO_ECN, 54, 1448, 34, 16), 9000, "vnet_gso_type"),
    (VnetHdr(0, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448), 9000, "vnet_gso_no_csum"),
    (VnetHdr(VALID, VIRTIO_NET_HDR_GSO_TCPV6, 74, 1428), 9000, "vnet_gso_no_csum"),
    (VnetHdr(NEEDS, VIRTIO_NET_HDR_GSO_TCPV4, 54, 0, 34, 16), 9000, "vnet_gso_size"),
    (VnetHdr(0, VIRTIO_NET_HDR_GSO_NONE, 0, 1448), 9000, "vnet_gso_size"),
    (VnetHdr(hdr_len=101), 100, "vnet_hdr_len"),
]


@pytest.mark.parametrize(("hdr", "length", "reason"), MALFORMED)
def test_malformed_headers_are_refused_with_a_reason(hdr: VnetHdr, length: int, reason: str) -> None:
    with pytest.raises(VnetError) as e:
        vnet.to_offload(hdr, length)
    assert e.value.reason == reason
    assert reason in str(e.value) and e.value.detail


@st.composite
def vnet_headers(draw: st.DrawFn) -> tuple[VnetHdr, int]:
    """Headers a TAP could hand us, built so that every branch of ``to_offload`` is reached
    often: a well-formed header of a drawn kind (none, data-valid, partial, TCPv4/TCPv6 GSO),
    then, half of the time, one field replaced by anything of its C type."""
    length = draw(st.integers(14 + 40, 65535))
    kind = draw(st.sampled_from(["none", "valid", "partial", "tcpv4", "tcpv6"]))
    start = draw(st.integers(14, length - 2))
    offset = draw(st.integers(0, length - start - 2))
    gso = {"tcpv4": VIRTIO_NET_HDR_GSO_TCPV4, "tcpv6": VIRTIO_NET_HDR_GSO_TCPV6}.get(kind, 0)
    fields = {
        "flags": {"none": 0, "valid": VALID}.get(kind, NEEDS),
        "gso_type": gso,
        "hdr_len": draw(st.integers(0, min(length, 128))),
        "gso_size": draw(st.integers(1, 9000)) if gso else 0,
        "csum_start": start if kind not in ("none", "valid") else 0,
        "csum_offset": offset if kind not in ("none", "valid") else 0,
    }
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(fields)))
        fields[name] = draw(u8 if name in ("flags", "gso_type") else u16)
    return VnetHdr(**fields), length


def check_header(h: VnetHdr, length: int) -> str:
    """Either a VnetError or a consistent offload state; returns which branch it took."""
    try:
        o = vnet.to_offload(h, length)
    except VnetError as e:
        assert e.reason.startswith("vnet_")
        return "refused"
    f, g, gs = h.flags, h.gso_type, h.gso_size
    assert f & ~(NEEDS | VALID) == 0 and h.hdr_len <= length
    if o.csum is Csum.PARTIAL:
        assert f == NEEDS and 14 <= o.csum_start and o.csum_start + o.csum_offset + 2 <= length
    else:
        assert (o.csum_start, o.csum_offset) == (0, 0)
        assert o.csum is (Csum.UNNECESSARY if f == VALID else Csum.NONE)
    if o.gso_type != GSO_NONE:
        assert o.csum is Csum.PARTIAL and o.gso_size == gs > 0
        assert (g, o.gso_type) in {
            (VIRTIO_NET_HDR_GSO_TCPV4, GSO_TCPV4),
            (VIRTIO_NET_HDR_GSO_TCPV6, GSO_TCPV6),
        }
        return "gso"
    assert g == 0 and gs == 0 and o.gso_size == 0
    return {Csum.PARTIAL: "partial", Csum.UNNECESSARY: "valid", Csum.NONE: "none"}[o.csum]


def test_any_header_is_either_consistent_or_a_vnet_error() -> None:
    """The property, and proof that its strategy reaches every branch (a uniform draw of the
    six fields reached the GSO and checksum branches in 0 of 500 examples)."""
    seen: Counter[str] = Counter()

    @settings(max_examples=600, database=None)
    @given(vnet_headers())
    def prop(case: tuple[VnetHdr, int]) -> None:
        seen[check_header(*case)] += 1

    prop()
    total = sum(seen.values())
    for branch in ("refused", "gso", "partial", "valid", "none"):
        assert seen[branch] >= total // 50, f"the strategy reaches {branch!r} too rarely: {dict(seen)}"


# -- from skb state, and both ways ----------------------------------------------------------


@st.composite
def non_gso_states(draw: st.DrawFn) -> tuple[int, Offload]:
    length = draw(st.integers(14 + 2, 9000))
    kind = draw(st.sampled_from(list(Csum)))
    if kind is Csum.PARTIAL:
        start = draw(st.integers(14, length - 2))
        off = draw(st.integers(0, length - start - 2))
        return length, Offload(Csum.PARTIAL, start, off)
    return length, Offload(kind)


@settings(max_examples=200)
@given(non_gso_states())
def test_non_gso_state_round_trips(state: tuple[int, Offload]) -> None:
    length, o = state
    src = HeapPages()
    skb = build_skb(bytes(length), linear_layout(length), src)
    skb.csum, skb.csum_start, skb.csum_offset = o.csum, o.csum_start, o.csum_offset
    hdr = vnet.from_skb(skb)
    assert hdr.gso_type == 0 and hdr.gso_size == 0 and hdr.hdr_len == 0
    assert hdr.flags == {Csum.NONE: 0, Csum.PARTIAL: NEEDS, Csum.UNNECESSARY: VALID}[o.csum]
    assert vnet.to_offload(VnetHdr.unpack(hdr.pack()), length) == o
    skb.free(src)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([4, 6]), st.integers(1, 60000), st.integers(1, 9000), st.binary(max_size=12))
def test_gso_state_round_trips(ip: int, plen: int, mss: int, opts: bytes) -> None:
    src = HeapPages()
    f = build_frame(ip=ip, payload=bytes(plen), csum="partial", tcp_options=opts)
    skb = frame_skb(f, src, gso_size=mss)
    hdr = vnet.from_skb(skb)
    assert hdr.flags == NEEDS
    assert hdr.gso_type == (VIRTIO_NET_HDR_GSO_TCPV4 if ip == 4 else VIRTIO_NET_HDR_GSO_TCPV6)
    assert hdr.hdr_len == f.headers.payload_off  # Ethernet + IP + TCP (with options)
    assert (hdr.gso_size, hdr.csum_start, hdr.csum_offset) == (mss, f.headers.l4_off, 16)
    back = frame_skb(f, src)
    vnet.apply_vnet_hdr(back, VnetHdr.unpack(hdr.pack()))
    assert (back.csum, back.csum_start, back.csum_offset) == (skb.csum, skb.csum_start, skb.csum_offset)
    assert (back.gso_type, back.gso_size) == (skb.gso_type, skb.gso_size)
    skb.free(src)
    back.free(src)
    assert src.live == 0


def test_from_skb_refuses_what_a_tap_cannot_take(pages: HeapPages) -> None:
    f = build_frame(payload=bytes(3000), csum="full")
    skb = frame_skb(f, pages, gso_size=1448)  # GSO whose checksum is already final
    with pytest.raises(VnetError) as e:
        vnet.from_skb(skb)
    assert e.value.reason == "vnet_gso_no_csum"
    skb.csum, skb.csum_start, skb.csum_offset = Csum.PARTIAL, 34, 16
    skb.gso_type = 9
    with pytest.raises(VnetError) as e:
        vnet.from_skb(skb)
    assert e.value.reason == "vnet_gso_type"
    skb.gso_type, skb.gso_size = GSO_TCPV4, 0
    with pytest.raises(VnetError) as e:
        vnet.from_skb(skb)
    assert e.value.reason == "vnet_gso_size"
    skb.gso_size, skb.csum_offset = 1448, skb.len
    with pytest.raises(VnetError) as e:
        vnet.from_skb(skb)
    assert e.value.reason == "vnet_csum_offset"
    skb.free(pages)
    junk = build_skb(b"\xff" * 200, linear_layout(200), pages)  # not IP: no header length
    junk.csum, junk.csum_start, junk.csum_offset = Csum.PARTIAL, 34, 16
    junk.gso_type, junk.gso_size = GSO_TCPV4, 100
    with pytest.raises(VnetError) as e:
        vnet.from_skb(junk)
    assert e.value.reason == "vnet_gso_headers"
    junk.free(pages)


# -- frame size checks -----------------------------------------------------------------------

GSO_HDR = VnetHdr(NEEDS, VIRTIO_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16)


@pytest.mark.parametrize(
    ("hdr", "length", "mtu", "vlan", "reason"),
    [
        (VnetHdr(), 1514, 1500, False, None),
        (VnetHdr(), 1515, 1500, False, "over_mtu"),
        (VnetHdr(), 1518, 1500, True, None),
        (VnetHdr(), 1519, 1500, True, "over_mtu"),
        (VnetHdr(), 9014, 9000, False, None),
        (VnetHdr(), 13, 1500, False, "runt"),
        (GSO_HDR, 64000, 1500, False, None),
        (GSO_HDR, MAX_PACKET, 1500, False, None),
        (GSO_HDR, MAX_PACKET + 1, 1500, False, "too_big"),
    ],
)
def test_check_frame(hdr: VnetHdr, length: int, mtu: int, vlan: bool, reason: str | None) -> None:
    if reason is None:
        vnet.check_frame(hdr, length, mtu, vlan=vlan)
        return
    with pytest.raises(VnetError) as e:
        vnet.check_frame(hdr, length, mtu, vlan=vlan)
    assert e.value.reason == reason


def test_vlan_tag_detection() -> None:
    assert vnet.has_vlan_tag(bytes(12) + b"\x81\x00" + bytes(4))
    assert not vnet.has_vlan_tag(bytes(12) + b"\x08\x00")
    assert not vnet.has_vlan_tag(b"short")
