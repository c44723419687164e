"""The virtio-net header a TAP with ``IFF_VNET_HDR`` puts in front of every frame, and its
translation to and from an skb's offload state (checksum and GSO).

Pure: bytes and numbers in, decisions out.  ``struct virtio_net_hdr`` (linux/virtio_net.h)::

    u8 flags; u8 gso_type; u16 hdr_len; u16 gso_size; u16 csum_start; u16 csum_offset;

10 bytes.  The TAP is told this size explicitly (``TUNSETVNETHDRSZ`` 10) and little-endian
byte order (``TUNSETVNETLE``), so the fields are little-endian on every host.

A header that xennet cannot carry faithfully -- UDP GSO, ECN, unknown flags, offsets outside
the frame -- raises ``VnetError``.  Its ``reason`` is a short fixed key for drop counters;
the message says what was found.  The caller counts and drops the frame, never forwards it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..packet.csum import BytesLike
from ..packet.frames import MAX_HEADER_LEN, VLAN_HLEN, FrameError, parse_l3l4
from ..packet.skb import ETH_HLEN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, MAX_PACKET, Csum, Skb

VNET_HDR_LEN = 10  # sizeof(struct virtio_net_hdr); the 12-byte form adds num_buffers

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_F_RSC_INFO = 4  # device-to-driver only, never from a TAP: refused

VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

_KNOWN_FLAGS = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
_U16 = 0xFFFF
_STRUCT = struct.Struct("<BBHHHH")

# virtio GSO type <-> skb GSO type (the netif protocol's: TCPv4 and TCPv6 only)
_TO_SKB_GSO = {VIRTIO_NET_HDR_GSO_TCPV4: GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6: GSO_TCPV6}
_FROM_SKB_GSO = {v: k for k, v in _TO_SKB_GSO.items()}


class VnetError(ValueError):
    """A vnet header (or frame) that cannot be carried: ``reason`` is a counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


@dataclass(frozen=True)
class VnetHdr:
    flags: int = 0
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        try:
            return _STRUCT.pack(
                self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset
            )
        except struct.error as e:
            raise VnetError("vnet_field_range", f"a header field does not fit its C type ({e})") from None

    @classmethod
    def unpack(cls, data: BytesLike) -> VnetHdr:
        if len(data) < VNET_HDR_LEN:
            raise VnetError("vnet_short", f"{len(data)} bytes, a vnet header has {VNET_HDR_LEN}")
        return cls(*_STRUCT.unpack_from(data, 0))


class Offload(NamedTuple):
    """An skb's offload state, as a vnet header describes it."""

    csum: Csum = Csum.NONE
    csum_start: int = 0
    csum_offset: int = 0
    gso_type: int = GSO_NONE
    gso_size: int = 0


def to_offload(hdr: VnetHdr, length: int) -> Offload:
    """The skb state for a ``length``-byte frame that came with ``hdr``; VnetError if the
    header is malformed or asks for something the netif protocol cannot carry."""
    if hdr.flags & ~_KNOWN_FLAGS:
        raise VnetError("vnet_flags", f"unknown flags {hdr.flags & ~_KNOWN_FLAGS:#x} (flags {hdr.flags:#x})")
    needs_csum = bool(hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
    data_valid = bool(hdr.flags & VIRTIO_NET_HDR_F_DATA_VALID)
    if needs_csum and data_valid:
        raise VnetError("vnet_flags", "NEEDS_CSUM and DATA_VALID together")
    if hdr.hdr_len > length:
        raise VnetError("vnet_hdr_len", f"hdr_len {hdr.hdr_len} beyond a {length}-byte frame")
    csum, start, offset = Csum.NONE, 0, 0
    if needs_csum:
        start, offset = hdr.csum_start, hdr.csum_offset
        if not ETH_HLEN <= start < length:
            raise VnetError(
                "vnet_csum_start", f"csum_start {start} outside the L3 part of a {length}-byte frame"
            )
        if start + offset + 2 > length:
            raise VnetError(
                "vnet_csum_offset",
                f"checksum field at {start}+{offset} does not fit a {length}-byte frame",
            )
        csum = Csum.PARTIAL
    elif data_valid:
        csum = Csum.UNNECESSARY
    gso_type, gso_size = GSO_NONE, 0
    if hdr.gso_type != VIRTIO_NET_HDR_GSO_NONE:
        if hdr.gso_type & VIRTIO_NET_HDR_GSO_ECN:
            raise VnetError("vnet_gso_type", f"GSO with ECN (gso_type {hdr.gso_type:#x}): no netif flag")
        if hdr.gso_type not in _TO_SKB_GSO:
            what = {VIRTIO_NET_HDR_GSO_UDP: "UFO", VIRTIO_NET_HDR_GSO_UDP_L4: "UDP L4 GSO"}.get(
                hdr.gso_type, "unknown"
            )
            raise VnetError("vnet_gso_type", f"gso_type {hdr.gso_type:#x} ({what}): only TCPv4/TCPv6")
        if not needs_csum:
            raise VnetError("vnet_gso_no_csum", "a GSO frame without NEEDS_CSUM")
        if hdr.gso_size == 0:
            raise VnetError("vnet_gso_size", "a GSO type with gso_size 0")
        gso_type, gso_size = _TO_SKB_GSO[hdr.gso_type], hdr.gso_size
    elif hdr.gso_size:
        # Linux ignores it; we refuse: a header that says two things is not one we trust
        raise VnetError("vnet_gso_size", f"gso_size {hdr.gso_size} without a GSO type")
    return Offload(csum, start, offset, gso_type, gso_size)


def apply_vnet_hdr(skb: Skb, hdr: VnetHdr) -> None:
    """Set ``skb``'s checksum and GSO state from ``hdr`` (VnetError leaves it untouched)."""
    o = to_offload(hdr, skb.len)
    skb.csum, skb.csum_start, skb.csum_offset = o.csum, o.csum_start, o.csum_offset
    skb.gso_type, skb.gso_size = o.gso_type, o.gso_size


def header_length(skb: Skb) -> int:
    """Ethernet + IP + TCP/UDP header bytes at the front of ``skb`` (VnetError if unparsable)."""
    try:
        return parse_l3l4(skb.read(0, min(skb.len, MAX_HEADER_LEN)), headers_only=True).payload_off
    except FrameError as e:
        raise VnetError("vnet_gso_headers", f"GSO frame whose headers do not parse ({e})") from None


def from_skb(skb: Skb) -> VnetHdr:
    """The header to write in front of ``skb`` on a TAP (see ``for_offload``)."""
    return for_offload(
        Offload(skb.csum, skb.csum_start, skb.csum_offset, skb.gso_type, skb.gso_size),
        skb.len,
        lambda: header_length(skb),
    )


def for_offload(o: Offload, length: int, hdr_len: Callable[[], int]) -> VnetHdr:
    """The header for a ``length``-byte frame in offload state ``o``; ``hdr_len`` finds its
    header length (only GSO asks).  VnetError for a state the TAP cannot take: GSO whose
    checksum is not partial (the kernel would fix up each segment's checksum from a pseudo
    sum that is not there), offsets outside the frame or a u16."""
    flags = start = offset = 0
    if o.csum is Csum.PARTIAL:
        start, offset = o.csum_start, o.csum_offset
        if not (ETH_HLEN <= start < length and offset >= 0 and start + offset + 2 <= length):
            raise VnetError(
                "vnet_csum_offset",
                f"csum_start {start} + csum_offset {offset} do not fit a {length}-byte frame",
            )
        if start > _U16 or offset > _U16:
            raise VnetError("vnet_field_range", f"csum_start {start} / csum_offset {offset} exceed u16")
        flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
    elif o.csum is Csum.UNNECESSARY:
        flags = VIRTIO_NET_HDR_F_DATA_VALID
    if o.gso_type == GSO_NONE:
        return VnetHdr(flags, VIRTIO_NET_HDR_GSO_NONE, 0, 0, start, offset)
    if o.gso_type not in _FROM_SKB_GSO:
        raise VnetError("vnet_gso_type", f"skb gso_type {o.gso_type}: only TCPv4/TCPv6")
    if o.csum is not Csum.PARTIAL:
        raise VnetError("vnet_gso_no_csum", f"a GSO skb with checksum state {o.csum.value}")
    if not 0 < o.gso_size <= _U16:
        raise VnetError("vnet_gso_size", f"gso_size {o.gso_size}")
    return VnetHdr(flags, _FROM_SKB_GSO[o.gso_type], hdr_len(), o.gso_size, start, offset)


def max_frame_len(mtu: int, *, vlan: bool = False) -> int:
    """The longest non-GSO Ethernet frame an ``mtu`` (L3 MTU, as ``ip link`` shows) allows."""
    return mtu + ETH_HLEN + (VLAN_HLEN if vlan else 0)


def check_frame(
    hdr: VnetHdr, length: int, mtu: int, *, vlan: bool = False, max_len: int = MAX_PACKET
) -> None:
    """VnetError unless a ``length``-byte frame with ``hdr`` may pass a link of ``mtu``."""
    check_length(hdr.gso_type != VIRTIO_NET_HDR_GSO_NONE, length, mtu, vlan=vlan, max_len=max_len)


def check_length(gso: bool, length: int, mtu: int, *, vlan: bool = False, max_len: int = MAX_PACKET) -> None:
    """VnetError unless a ``length``-byte frame may pass a link of ``mtu``: at least an
    Ethernet header, not over the MTU unless it is GSO, never over ``max_len`` (65535: the
    most the netif protocol carries in one packet)."""
    if length < ETH_HLEN:
        raise VnetError("runt", f"{length}-byte frame is shorter than an Ethernet header")
    if length > max_len:
        raise VnetError("too_big", f"{length}-byte frame: at most {max_len}")
    if not gso and length > max_frame_len(mtu, vlan=vlan):
        raise VnetError(
            "over_mtu", f"{length}-byte frame without GSO over MTU {mtu} ({max_frame_len(mtu, vlan=vlan)})"
        )


def has_vlan_tag(frame: BytesLike) -> bool:
    """True when the frame's ethertype is 802.1Q (its MTU allowance is 4 bytes larger)."""
    return len(frame) >= ETH_HLEN and bytes(frame[12:14]) == b"\x81\x00"
