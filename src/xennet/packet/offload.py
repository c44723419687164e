"""Checksum offload state from headers: what netback and netfront do on ``csum_blank``
(Linux's skb_checksum_setup): find where the L4 checksum starts and where its field is."""

from __future__ import annotations

from .frames import FrameError, parse_l3l4
from .skb import Skb

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
