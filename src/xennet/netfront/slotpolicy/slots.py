"""Slot accounting for netfront tx: how many ring slots an skb needs, and the header bounce.

Each slot carries at most one 4 KiB frame, so a buffer costs one slot per frame it spans
(``xennet_count_skb_slots``).  Netback wants the Ethernet header in the first slot: Linux
netfront copies the head to a fresh page when it starts fewer than ETH_HLEN bytes before a
page boundary (``PAGE_SIZE - offset < ETH_HLEN``).  Here the rule is said by what the first
slot carries: the head must have ``min(ETH_HLEN, len)`` bytes in its first frame.  For heads
of at least ETH_HLEN bytes that is the Linux rule (except that a head which ends before the
boundary needs no bounce); a shorter head gets the bytes it lacks pulled from the frags.
"""

from __future__ import annotations

from ...packet.skb import ETH_HLEN, MAX_SKB_FRAGS, Buf, Foreign, PageSource, Skb, order_for
from ...platform.base import PAGE_SIZE, Page
from .planner import first_frame_bytes


def count_slots(skb: Skb) -> int:
    """Ring slots the skb's data needs (extra-info slots not counted)."""
    return sum(b.slots() for b in skb.bufs)


def fits(skb: Skb, max_slots: int) -> bool:
    """Can the skb go on the ring as it is: slots within the limit, frags within MAX_SKB_FRAGS."""
    return count_slots(skb) <= max_slots and len(skb.frags) <= MAX_SKB_FRAGS


def header_bytes_needed(skb: Skb) -> int:
    return min(ETH_HLEN, skb.len)


def needs_bounce(skb: Skb) -> bool:
    """True when the first slot would carry fewer than ``min(ETH_HLEN, len)`` bytes."""
    return first_frame_bytes(skb.head.offset, skb.head.length) < header_bytes_needed(skb)


def shifted(buf: Buf, skip: int, length: int) -> Buf:
    """``length`` bytes of ``buf`` starting ``skip`` bytes in: same page, no copy."""
    foreign = buf.foreign
    if foreign is not None:
        foreign = Foreign(foreign.domid, foreign.gref, foreign.offset + skip)
    return Buf(buf.page, buf.offset + skip, length, foreign)


def copy_range(bufs: list[Buf], pos: int, dst: memoryview) -> None:
    """Copy ``len(dst)`` packet bytes starting at packet offset ``pos`` into ``dst``."""
    want = len(dst)
    done = 0
    start = 0
    for b in bufs:
        end = start + b.length
        if end > pos + done and done < want:
            skip = pos + done - start
            n = min(b.length - skip, want - done)
            dst[done : done + n] = b.page.view[b.offset + skip : b.offset + skip + n]
            done += n
        start = end
        if done >= want:
            break
    if done != want:
        raise ValueError(f"packet has no bytes [{pos}, {pos + want})")


def bounce(skb: Skb, source: PageSource) -> tuple[Skb, int]:
    """Copy the head (and, for a head shorter than the header, the header bytes after it) to
    offset 0 of a fresh page, so the first slot holds the Ethernet header; keep the frags.

    Returns ``(skb, 0)`` when no bounce is needed.  Otherwise the new skb owns the fresh page
    and borrows the remaining frags' pages from ``skb``: keep ``skb`` alive until the new skb
    is released.  Never needs more slots or buffers than ``skb``.
    """
    if not needs_bounce(skb):
        return skb, 0
    n = max(skb.head.length, header_bytes_needed(skb))
    page = source.alloc(order_for(n))
    try:
        copy_range(skb.bufs, 0, page.view[:n])
    except BaseException:
        source.free(page)
        raise
    frags: list[Buf] = []
    pulled = n - skb.head.length
    for f in skb.frags:
        if pulled >= f.length:
            pulled -= f.length
            continue
        frags.append(shifted(f, pulled, f.length - pulled) if pulled else f)
        pulled = 0
    return like(skb, Buf(page, 0, n), frags, [page]), n


def like(skb: Skb, head: Buf, frags: list[Buf], pages: list[Page]) -> Skb:
    """A new skb with ``skb``'s offload state and control block, owning ``pages``."""
    return Skb(
        head,
        frags,
        gso_size=skb.gso_size,
        gso_type=skb.gso_type,
        csum=skb.csum,
        csum_start=skb.csum_start,
        csum_offset=skb.csum_offset,
        pages=pages,
        cb=skb.cb_copy(),
    )


assert PAGE_SIZE == 4096  # the ring's slot size; the planner's page_size is only for tests
