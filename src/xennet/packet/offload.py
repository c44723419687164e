"""Checksum offload state from headers: what netback and netfront do on ``csum_blank``
(Linux's skb_checksum_setup): find where the L4 checksum starts and where its field is."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ..core.records import PKT_CSUM_PARTIAL, PKT_DATA_VALIDATED
from ..core.vec import PacketVec
from ..platform.base import PAGE_SIZE
from .csum import BytesLike, CsumError, complete_views, set_field
from .frames import FrameError, Headers, parse_l3l4
from .skb import Skb

log = logging.getLogger(__name__)

_HEADER_PEEK = 128  # enough for Ethernet + VLAN + IPv6 + TCP with options


def set_partial_offsets(skb: Skb) -> bool:
    """Set ``csum_start``/``csum_offset`` of a CHECKSUM_PARTIAL skb from its headers.
    False when the headers are not TCP/UDP over IPv4/IPv6 (the caller counts a drop)."""
    head = bytes(skb.head.view[:_HEADER_PEEK])
    if len(head) < _HEADER_PEEK and skb.frags:
        head = skb.data()[:_HEADER_PEEK]  # headers split across slots (XSA-423 shapes)
    try:
        h = parse_l3l4(head, headers_only=True)
    except FrameError:
        return False
    skb.csum_start = h.l4_off
    skb.csum_offset = h.csum_offset
    return True


def peek_headers(views: Iterable[BytesLike]) -> Headers | None:
    """The headers at the start of a packet held in ``views`` (slots of any size, even a few
    bytes each), or None when they are not TCP/UDP over IPv4/IPv6."""
    head = bytearray()
    for v in views:
        head += v[: _HEADER_PEEK - len(head)]
        if len(head) >= _HEADER_PEEK:
            break
    try:
        return parse_l3l4(head, headers_only=True)
    except FrameError:
        return None


def complete_unoffered(
    vec: PacketVec, mem: memoryview, first: int, csum4: bool, csum6: bool
) -> tuple[int, int]:
    """Packets ``first..`` of ``vec`` (pieces are frames of ``mem``) that ask for
    ``csum_blank`` where the peer did not offer it for their IP version (``feature-no-csum-
    offload``; ``feature-ipv6-csum-offload``): their checksum is completed in place (Linux's
    skb_checksum_help) and the flag cleared, so what the peer gets is final.  A GSO packet is
    left alone: GSO is only negotiated together with its checksum offload.  Returns
    (completed, unparseable); an unparseable one goes as it is, without the flag, for the peer
    to verify."""
    if csum4 and csum6:
        return 0, 0
    done = bad = 0
    for j in range(first, vec.npkts):
        p = vec.packet(j)
        if not p.flags & PKT_CSUM_PARTIAL or p.gso_size:
            continue
        views = [mem[pc.frame * PAGE_SIZE + pc.offset :][: pc.len] for pc in vec.pieces_of(j)]
        h = peek_headers(views)
        if h is not None and (csum4 if h.ip_version == 4 else csum6):
            continue
        start, offset = (p.csum_start, p.csum_offset) if p.csum_offset else (0, 0)
        if not offset and h is not None:
            start, offset = h.l4_off, h.csum_offset
        try:
            if not offset:
                raise CsumError("no checksum offsets and no TCP/UDP headers")
            complete_views(views, start, offset)
            done += 1
        except CsumError as exc:
            bad += 1
            log.warning("cannot complete a checksum the peer does not offload: %s", exc)
        vec.set_packet(j, p._replace(flags=p.flags & ~PKT_CSUM_PARTIAL))
    return done, bad


def gso_partial_fixup(vec: PacketVec, j: int, h: Headers, views: Sequence[memoryview]) -> None:
    """Packet ``j``, a GSO packet that came without ``csum_blank``: made CHECKSUM_PARTIAL,
    its checksum field reset to the pseudo-header sum (``views``: its leading bytes, holding
    the headers ``h``), as both Linux drivers do (``rx_gso_checksum_fixup``), so every
    segment cut from it gets its own checksum."""
    set_field(views, h.l4_off + h.csum_offset, h.pseudo_sum())
    p = vec.packet(j)
    flags = (p.flags | PKT_CSUM_PARTIAL) & ~PKT_DATA_VALIDATED
    vec.set_packet(j, p._replace(flags=flags, csum_start=h.l4_off, csum_offset=h.csum_offset))
