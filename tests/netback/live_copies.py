"""The live rx copies of an skb: ``netback.rx.skb_pieces`` and the core's ``netback_rx_plan``
(whichever core is selected), decoded, and run on plain memory."""

from __future__ import annotations

from typing import NamedTuple

from xennet.abi import netif
from xennet.abi.grant_table import GNTCOPY_source_gref
from xennet.core import kernels
from xennet.core.pure.codecs import (
    RX_PLAN,
    RX_REQ,
    RX_RSP,
    SEG_SIZE,
    SEG_TAIL,
    SEG_TAIL_OFF,
    SIDE_GREF,
    SIDE_VIRT,
)
from xennet.core.vec import PacketVec
from xennet.netback.rx import skb_pieces
from xennet.packet.skb import Skb
from xennet.platform.base import MAX_ORDER, PAGE_SIZE, Page

NREQS = 256
FIRST_GREF = 500  # rx request i posts grant FIRST_GREF + i


class FlatPages:
    """Compound pages with real frame numbers in one flat memory (the segments name them)."""

    def __init__(self, nr_frames: int = 1024) -> None:
        self.mem = bytearray(nr_frames * PAGE_SIZE)
        self.next = 0

    def alloc(self, order: int = 0) -> Page:
        assert 0 <= order <= MAX_ORDER
        frame, self.next = self.next, self.next + (1 << order)
        return Page(frame, order, memoryview(self.mem)[frame * PAGE_SIZE : self.next * PAGE_SIZE])

    def free(self, page: Page) -> None:
        pass


class Copy(NamedTuple):
    src: tuple[int, ...]  # (frame, offset) of our memory, or (domid, gref, offset) of a grant
    dst_gref: int
    dst_offset: int
    length: int


class LiveCopies(NamedTuple):
    copies: list[Copy]
    sizes: list[int]  # of the data responses, in order


def live_copies(skb: Skb, packing: int, max_buffers: int = 0xFFFF) -> LiveCopies:
    vec = PacketVec(1, 512)
    vec.append(skb_pieces(skb), gso_size=skb.gso_size, gso_type=skb.gso_type)
    reqs = b"".join(RX_REQ.pack(i, FIRST_GREF + i) for i in range(NREQS))
    segs, plans, rsps = bytearray(SEG_SIZE * 2048), bytearray(RX_PLAN.size), bytearray(8 * 512)
    res = kernels.netback_rx_plan(
        vec.pkts, vec.pieces, 0, 1, reqs, NREQS, packing, max_buffers, 5, 0, segs, 2048, plans, rsps, 512
    )
    assert res[0] == 1, f"not planned: {res}"
    seg0, nsegs, rsp0, nrsp, _nbuf, _rep = RX_PLAN.unpack_from(plans, 0)
    copies = []
    for k in range(seg0, seg0 + nsegs):
        base = k * SEG_SIZE
        n, flags, _status = SEG_TAIL.unpack_from(segs, base + SEG_TAIL_OFF)
        if flags & GNTCOPY_source_gref:
            gref, off, domid = SIDE_GREF.unpack_from(segs, base)
            src: tuple[int, ...] = (domid, gref, off)
        else:
            src = divmod(SIDE_VIRT.unpack_from(segs, base)[0], PAGE_SIZE)
        dref, doff, ddomid = SIDE_GREF.unpack_from(segs, base + 8)
        assert ddomid == 5
        copies.append(Copy(src, dref, doff, n))
    sizes = []
    extra = False
    for i in range(rsp0, rsp0 + nrsp):
        if extra:  # the GSO extra info
            extra = False
            continue
        _id, _off, flags, size = RX_RSP.unpack_from(rsps, i * 8)
        sizes.append(size)
        extra = bool(flags & netif.NETRXF_extra_info)
    return LiveCopies(copies, sizes)


def run_local(mem: bytes | bytearray, live: LiveCopies) -> bytes:
    """Carry out copies of local bytes into fresh buffers; the buffers' bytes, in order."""
    bufs: dict[int, bytearray] = {}
    for c in live.copies:
        assert len(c.src) == 2, "a foreign source"
        frame, off = c.src
        assert off + c.length <= PAGE_SIZE and c.dst_offset + c.length <= PAGE_SIZE
        start = frame * PAGE_SIZE + off
        buf = bufs.setdefault(c.dst_gref, bytearray(PAGE_SIZE))
        buf[c.dst_offset : c.dst_offset + c.length] = mem[start : start + c.length]
    refs = sorted(bufs)
    return b"".join(bytes(bufs[g][:n]) for g, n in zip(refs, live.sizes, strict=True))
