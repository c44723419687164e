"""A device's page pool: order-0 frames of the domain's memory, handed out and taken back in
batches by the data-plane kernels, and one at a time as ``Page``s by code that builds skbs.

A *granted* pool (netfront's ``grants=pool``) grants every frame it holds to the peer once,
when the frame joins the pool, and keeps the ref for the frame's life in the pool: a packet
on pool frames costs no ``grant_access``/``end_access`` (MirageOS's shared page pool).  The
peer may read (and for rx pools write) every pool frame at any time, so a pool only ever
holds this device's packet data.  At ``close`` every grant is ended; a frame the peer still
maps is never reused nor freed until it lets go (XSA-396): it waits in ``revoke``.

Pages of a larger order come straight from the domain's memory (they are the skb path's:
pktgen layouts, slot policies).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..core.vec import FramePool, Packet, PacketVec, Piece
from ..platform.base import PAGE_SIZE, Memory, Page, Platform, PlatformError
from .skb import Buf, Csum, PageSource, Skb, csum_of

log = logging.getLogger(__name__)

GROW = 64  # frames a pool takes from the domain's memory when it runs short


def set_offloads(skb: Skb, p: Packet) -> None:
    """A packet record's offload state (checksum, GSO) onto an skb."""
    skb.csum = csum_of(p.flags)
    if skb.csum is Csum.PARTIAL:
        skb.csum_start, skb.csum_offset = p.csum_start, p.csum_offset
    skb.gso_size, skb.gso_type = p.gso_size, p.gso_type


def vec_skbs(vec: PacketVec, page_of: Callable[[Piece], Page], source: PageSource) -> list[Skb]:
    """The vector's delivered packets as skbs that own their pages (``page_of`` each piece's)
    and carry their records' offload state; the vector is emptied (the slow path's hand-over
    from the kernels)."""
    out: list[Skb] = []
    for j in range(vec.npkts):
        p = vec.packet(j)
        if not p.npieces or p.error:
            continue  # refused: nothing to hand over
        pieces = vec.pieces_of(j)
        pages = [page_of(pc) for pc in pieces]
        bufs = [Buf(pg, pc.offset, pc.len) for pg, pc in zip(pages, pieces, strict=True)]
        skb = Skb(bufs[0], bufs[1:], pages=pages, source=source)
        set_offloads(skb, p)
        out.append(skb)
    vec.clear()
    return out


class Revoke:
    """Grants the peer may still map (XSA-396): their pages are freed (to ``source``, else the
    domain's memory) once every ref has ended, and never reused before."""

    def __init__(self, refs: list[int], pages: list[Page], source: PageSource | None = None) -> None:
        self.refs = refs
        self.pages = pages
        self.source = source

    def retry(self, platform: Platform) -> bool:
        """End what can be ended; free the pages when nothing is left.  True when done."""
        if self.refs:
            self.refs = platform.grants.end_many(self.refs)
        if self.refs:
            return False
        for page in self.pages:
            (self.source or platform.memory).free(page)
        self.pages = []
        return True


class PoolPages:
    """A ``PageSource`` over a ``FramePool`` (order 0) and the domain's memory (larger)."""

    def __init__(
        self,
        platform: Platform,
        *,
        grant_to: int | None = None,
        readonly: bool = False,
        limit: int = 4096,
        name: str = "pool",
    ) -> None:
        self.platform = platform
        self.memory: Memory = platform.memory
        self.grant_to = grant_to
        self.readonly = readonly
        self.limit = limit  # frames this pool may own
        self.name = name
        self.view = self.memory.view
        self.pool = FramePool(len(self.view) // PAGE_SIZE, granted=grant_to is not None)
        self.closed = False
        self.revoke: list[Revoke] = []
        self.grown = 0  # frames taken from the domain's memory

    @property
    def granted(self) -> bool:
        return self.grant_to is not None

    def page(self, frame: int) -> Page:
        return Page(frame, 0, self.view[frame * PAGE_SIZE : (frame + 1) * PAGE_SIZE])

    def ensure(self, free: int) -> bool:
        """At least ``free`` frames free, growing from memory within ``limit``.  False when
        the limit or the domain's memory says no."""
        while self.pool.count < free:
            want = min(max(GROW, free - self.pool.count), self.limit - self.pool.owned)
            if want <= 0 or self.closed:
                return False
            pages: list[Page] = []
            try:
                for _ in range(want):
                    pages.append(self.memory.alloc(0))
            except PlatformError:
                if not pages:
                    return False
            frames = [p.frame for p in pages]
            refs = None
            if self.grant_to is not None:
                try:
                    refs = self.platform.grants.grant_many(self.grant_to, frames, self.readonly)
                except PlatformError:
                    for p in pages:
                        self.memory.free(p)
                    return False
            self.pool.add(frames, refs)
            self.grown += len(frames)
        return True

    # --- PageSource -------------------------------------------------------------------

    def alloc(self, order: int = 0) -> Page:
        if order:
            return self.memory.alloc(order)
        if not self.ensure(1):
            raise PlatformError(f"{self.name}: no free page (limit {self.limit})")
        (frame,) = self.pool.take(1)
        return self.page(frame)

    def free(self, page: Page) -> None:
        if page.order or not self.pool.holds(page.frame):
            self.memory.free(page)
            return
        self.pool.give([page.frame])
        self.given_back()

    def given_back(self) -> None:
        """Frames came back (also through a kernel): after ``close`` they leave at once."""
        if self.closed and self.pool.count:
            self._release(self.pool.drain())

    # --- teardown -----------------------------------------------------------------------

    def close(self) -> None:
        """Every free frame goes back to memory (its grant ended first); frames still out come
        back the same way when they are given back."""
        self.closed = True
        self._release(self.pool.drain())

    def _release(self, frames: list[int]) -> None:
        if not frames:
            return
        pages = [self.page(f) for f in frames]
        if self.grant_to is None:
            for p in pages:
                self.memory.free(p)
            return
        refs = [self.pool.ref(f) for f in frames]
        kept = set(self.platform.grants.end_many(refs))
        held: list[Page] = []
        for ref, p in zip(refs, pages, strict=True):
            if ref in kept:
                held.append(p)
            else:
                self.memory.free(p)
        if kept:
            log.error(
                "%s: the peer still maps %d pool grants; keeping their pages until it lets go",
                self.name,
                len(kept),
            )
            self.revoke.append(Revoke(sorted(kept), held))

    @property
    def frames_out(self) -> int:
        """Frames handed out and not back yet."""
        return self.pool.taken
