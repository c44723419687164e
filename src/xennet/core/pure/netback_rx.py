"""netback receive (backend -> guest), the batch kernels: pack queued packets into the
buffers the guest posted, as one grant-copy batch, and prepare their responses.

A packet's pieces are the copy chunks (a piece never crosses a 4 KiB frame).  The packings
(seed 004 and Linux's), as in ``netback/rxpolicy/packing.py``:

``PACK_FULL``  fill every buffer to the last byte, splitting a chunk where a buffer ends.
``PACK_SEED``  put a chunk in the current buffer if it fits; else open the next buffer --
               unless the current one is empty or the chunk is the packet's very first
               bytes -- so no chunk is split and no buffer is opened empty.

A plan of more than ``max_buffers`` buffers (a netfront takes 18) is redone with
``PACK_FULL`` and marked ``repacked``.  A GSO packet takes one more slot: the GSO extra
info, right after the first buffer's response.
"""

from __future__ import annotations

from ...abi import netif
from ...abi.grant_table import (
    DOMID_FIRST_RESERVED,
    DOMID_SELF,
    GNTCOPY_dest_gref,
    GNTCOPY_source_gref,
    GNTST_okay,
)
from .. import records as r
from ..types import Buffer, WBuffer
from .codecs import (
    EXTRA_GSO,
    PIECE,
    PKT,
    RX_PLAN,
    RX_REQ,
    RX_RSP,
    S16,
    SEG_SIZE,
    SEG_STATUS_OFF,
    SEG_TAIL,
    SEG_TAIL_OFF,
    SIDE_GREF,
    SIDE_VIRT,
)

PACK_FULL = 0
PACK_SEED = 1
RX_ENTRY = 8  # an rx ring entry: request, response or extra info
BUF = r.PAGE_SIZE  # a posted rx buffer
MAX_CHUNKS = 1024  # pieces of one packet: a 64 KiB packet has at most 17 data pieces


def _chunks(vpc: memoryview, piece0: int, npieces: int) -> list[tuple[int, int]]:
    """(piece index, length) of the packet's data pieces (head runs are not data)."""
    if (piece0 + npieces) * r.PIECE.size > len(vpc):
        raise ValueError("netback_rx: pieces past the vector")
    out: list[tuple[int, int]] = []
    for k in range(piece0, piece0 + npieces):
        _frame, off, length, _ref, _domid, flags = PIECE.unpack_from(vpc, k * r.PIECE.size)
        if not flags & r.PIECE_RUN and length:
            if off + length > r.PAGE_SIZE:  # a response's size is one page at most
                raise ValueError(f"netback_rx: piece {k} crosses its page")
            if len(out) == MAX_CHUNKS:
                raise ValueError(f"netback_rx: a packet of more than {MAX_CHUNKS} pieces")
            out.append((k, length))
    return out


def _plan(chunks: list[tuple[int, int]], packing: int) -> list[list[tuple[int, int, int, int]]]:
    """Buffers of copies (piece, offset into the piece, offset in the buffer, length)."""
    buffers: list[list[tuple[int, int, int, int]]] = [[]]
    fill = 0
    for idx, (k, length) in enumerate(chunks):
        if packing == PACK_SEED:
            head = idx == 0
            if fill == BUF or (fill + length > BUF and fill > 0 and not head):
                buffers.append([])
                fill = 0
            buffers[-1].append((k, 0, fill, length))  # length <= BUF: it fits whole
            fill += length
            continue
        done = 0
        while done < length:
            if fill == BUF:
                buffers.append([])
                fill = 0
            n = min(length - done, BUF - fill)
            buffers[-1].append((k, done, fill, n))
            fill += n
            done += n
    return buffers


def netback_rx_estimate(vec_pieces: Buffer, piece0: int, npieces: int, packing: int, gso: bool) -> int:
    """Ring slots the packet's plan takes, without building it (estimate admission)."""
    vpc = memoryview(vec_pieces).cast("B")
    chunks = _chunks(vpc, piece0, npieces)
    if not chunks:
        return 0
    if packing == PACK_SEED:
        count, fill = 1, 0
        for idx, (_k, length) in enumerate(chunks):
            if fill == BUF or (fill + length > BUF and fill > 0 and idx > 0):
                count, fill = count + 1, 0
            fill += length
    else:
        count = -(-sum(n for _k, n in chunks) // BUF)
    return count + (1 if gso else 0)


Planned = tuple[int, int, int, int, int, int, int, int, int]


def netback_rx_plan(
    vec_pkts: Buffer,
    vec_pieces: Buffer,
    start: int,
    npkts: int,
    reqs: Buffer,
    nreqs: int,
    packing: int,
    max_buffers: int,
    front_domid: int,
    mem_base: int,
    segs: WBuffer,
    seg_cap: int,
    plans: WBuffer,
    rsps: WBuffer,
    rsp_cap: int,
) -> Planned:
    """Plan queued packets ``start..`` into the ``nreqs`` copied-out rx requests, in order,
    until one does not fit.  Per packet: its copies (``segs``), a plan record and its
    prepared responses (OKAY sizes; ``rx_respond`` turns them into errors if a copy fails).
    Returns (packets planned, requests used, segments, responses, the slots the next packet
    needs or 0, bytes staged from our memory, bytes forwarded from other domains' grants,
    plans redone with PACK_FULL, the planned packets' bytes)."""
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    q = memoryview(reqs).cast("B")
    so = memoryview(segs).cast("B")
    pl = memoryview(plans).cast("B")
    ro = memoryview(rsps).cast("B")
    if len(q) < nreqs * RX_ENTRY or len(so) < seg_cap * SEG_SIZE or len(ro) < rsp_cap * RX_ENTRY:
        raise ValueError("netback_rx_plan: buffers smaller than their sizes")
    if rsp_cap > 0xFFFF:
        raise ValueError("netback_rx_plan: rsp_cap above 65535")
    if not 0 <= front_domid < DOMID_FIRST_RESERVED:
        raise ValueError(f"netback_rx_plan: domid {front_domid} is not a guest's")
    if len(pl) < npkts * r.RX_PLAN.size or len(vp) < (start + npkts) * r.PKT.size:
        raise ValueError("netback_rx_plan: packet buffers too small")
    used = nseg = nrsp = staged = forwarded = repacks = planned = 0
    for j in range(npkts):
        piece0, npieces, flags, length, _tag, gso_size, gso_type, _err, _cs, _co = PKT.unpack_from(
            vp, (start + j) * r.PKT.size
        )
        chunks = _chunks(vpc, piece0, npieces)
        if not chunks:  # nothing to receive: no slots, no responses (the caller refuses it)
            RX_PLAN.pack_into(pl, j * r.RX_PLAN.size, nseg, 0, nrsp, 0, 0, 0)
            planned += length
            continue
        buffers = _plan(chunks, packing)
        repacked = 0
        if len(buffers) > max_buffers and packing != PACK_FULL:
            buffers = _plan(chunks, PACK_FULL)
            repacked = 1
        gso = bool(gso_size)
        slots = len(buffers) + (1 if gso else 0)
        copies = sum(len(b) for b in buffers)
        if used + slots > nreqs:
            return j, used, nseg, nrsp, slots, staged, forwarded, repacks, planned
        if nseg + copies > seg_cap or nrsp + slots > rsp_cap:
            return j, used, nseg, nrsp, 0, staged, forwarded, repacks, planned
        repacks += repacked
        planned += length
        RX_PLAN.pack_into(pl, j * r.RX_PLAN.size, nseg, copies, nrsp, slots, len(buffers), repacked)
        f0 = netif.rx_csum_flags(flags)
        for b, copies_b in enumerate(buffers):
            slot = b + (1 if gso and b > 0 else 0)
            rid, gref = RX_REQ.unpack_from(q, (used + slot) * RX_ENTRY)
            size = 0
            for k, src_off, dst_off, n in copies_b:
                frame, poff, _len, _ref, domid, _pf = PIECE.unpack_from(vpc, k * r.PIECE.size)
                base = nseg * SEG_SIZE
                so[base : base + SEG_SIZE] = bytes(SEG_SIZE)
                if domid == DOMID_SELF:
                    SIDE_VIRT.pack_into(so, base, mem_base + frame * r.PAGE_SIZE + poff + src_off)
                    seg_flags = GNTCOPY_dest_gref
                    staged += n
                else:
                    SIDE_GREF.pack_into(so, base, frame, poff + src_off, domid)
                    seg_flags = GNTCOPY_source_gref | GNTCOPY_dest_gref
                    forwarded += n
                SIDE_GREF.pack_into(so, base + 8, gref, dst_off, front_domid)
                SEG_TAIL.pack_into(so, base + SEG_TAIL_OFF, n, seg_flags, 0)
                nseg += 1
                size += n
            rflags = f0 if b == 0 else 0
            if b < len(buffers) - 1:
                rflags |= netif.NETRXF_more_data
            if b == 0 and gso:
                rflags |= netif.NETRXF_extra_info
            RX_RSP.pack_into(ro, nrsp * RX_ENTRY, rid, 0, rflags, size)
            nrsp += 1
            if b == 0 and gso:
                # the extra info takes the slot after the first response (its request is spent)
                EXTRA_GSO.pack_into(
                    ro, nrsp * RX_ENTRY, netif.XEN_NETIF_EXTRA_TYPE_GSO, 0, gso_size, gso_type, 0
                )
                nrsp += 1
        used += slots
    return npkts, used, nseg, nrsp, 0, staged, forwarded, repacks, planned


def netback_rx_respond(
    plans: Buffer, npkts: int, segs: Buffer, rsps: WBuffer, status_out: WBuffer, vec_pkts: Buffer, start: int
) -> tuple[int, int, int, int, int]:
    """After the copies: a packet whose copy failed gets ERROR in its data responses, and its
    first bad GNTST status in ``status_out``.  The plans are of packets ``start..`` of
    ``vec_pkts``.  Returns (packets delivered, packets failed, bytes, slots, GSO packets)."""
    vp = memoryview(vec_pkts).cast("B")
    if len(vp) < (start + npkts) * r.PKT.size:
        raise ValueError("netback_rx_respond: buffers too small")
    nbytes = nslots = gso = 0
    pl = memoryview(plans).cast("B")
    so = memoryview(segs).cast("B")
    ro = memoryview(rsps).cast("B")
    st = memoryview(status_out).cast("B").cast("h")
    if len(st) < npkts or len(pl) < npkts * r.RX_PLAN.size:
        raise ValueError("netback_rx_respond: buffers too small")
    ok = bad = 0
    for j in range(npkts):
        seg0, nsegs, rsp0, nrsp, _nbuf, _rep = RX_PLAN.unpack_from(pl, j * r.RX_PLAN.size)
        if (seg0 + nsegs) * SEG_SIZE > len(so) or (rsp0 + nrsp) * RX_ENTRY > len(ro):
            raise ValueError(f"netback_rx_respond: plan {j} past its batch")
        gnt = GNTST_okay
        for k in range(seg0, seg0 + nsegs):
            s = S16.unpack_from(so, k * SEG_SIZE + SEG_STATUS_OFF)[0]
            if s != GNTST_okay:
                gnt = s
                break
        st[j] = gnt
        if gnt == GNTST_okay:
            ok += 1
            if nrsp:
                nbytes += PKT.unpack_from(vp, (start + j) * r.PKT.size)[3]
                nslots += nrsp
                gso += 1 if nrsp > _nbuf else 0
            continue
        bad += 1
        extra = False
        for i in range(rsp0, rsp0 + nrsp):
            if extra:  # the GSO extra info is no response: leave it
                extra = False
                continue
            rid, off, flags, _size = RX_RSP.unpack_from(ro, i * RX_ENTRY)
            RX_RSP.pack_into(ro, i * RX_ENTRY, rid, off, flags, netif.NETIF_RSP_ERROR)
            extra = bool(flags & netif.NETRXF_extra_info)
    return ok, bad, nbytes, nslots, gso
