"""Reference only: the slot estimate exactly as seed 004 wrote it (``count_skb_slots``).

It counts whole frags (``frags[i].size``) and assumes the head sits inside one 4 KiB page
(``BUG_ON(offset_in_page(skb->data) + skb_headlen(skb) > MAX_BUFFER_OFFSET)``).  On compound
pages the copy cannot work in whole frags: a grant copy stops at every 4 KiB frame of the
source, so the copy packs per-frame chunks (``SeedPacking``) and the two counts drift apart,
in both directions.  Never use this to reserve ring slots; it is here to show where and why.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...packet.skb import Piece
from ...platform.base import PAGE_SIZE
from .plan import RX_BUFFER_SIZE

MAX_BUFFER_OFFSET = RX_BUFFER_SIZE


class SeedBug(AssertionError):
    """One of the seed's BUG_ON()s fired: in the kernel, a dom0 oops."""


def seed_original_count(layout: Sequence[Piece], gso: bool, *, bug_on: bool = True) -> int:
    """Seed 004's ``count_skb_slots`` for ``layout`` (head first).

    With ``bug_on`` (the default) a BUG_ON raises SeedBug: a head crossing a 4 KiB boundary
    (the seed assumes it never does), or a head longer than a buffer followed by frags.  With
    ``bug_on=False`` the arithmetic runs on as C would with the assertions compiled out
    (unsigned wrap-around included: Python's exact integers give the same values here).
    """
    head = layout[0]
    if bug_on and head.offset % PAGE_SIZE + head.length > MAX_BUFFER_OFFSET:
        raise SeedBug(f"head of {head.length} bytes at page offset {head.offset % PAGE_SIZE} crosses 4 KiB")
    count = 1
    copy_off = head.length
    if gso:
        count += 1
    for frag in layout[1:]:
        size = frag.length
        while size > 0:
            if bug_on and copy_off > MAX_BUFFER_OFFSET:
                raise SeedBug(f"copy_off {copy_off} > {MAX_BUFFER_OFFSET}")
            # "These checks are the same as in netbk_gop_frag_copy" -- but on the whole frag
            if copy_off == MAX_BUFFER_OFFSET or (
                copy_off + size > MAX_BUFFER_OFFSET and size <= MAX_BUFFER_OFFSET and copy_off
            ):
                count += 1
                copy_off = 0
            nbytes = size
            if copy_off + nbytes > MAX_BUFFER_OFFSET:
                nbytes = MAX_BUFFER_OFFSET - copy_off  # negative (wraps in C) when copy_off > 4096
            copy_off += nbytes
            size -= nbytes
    return count
