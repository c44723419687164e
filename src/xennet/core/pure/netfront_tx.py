"""netfront transmit, the batch kernels: post packets as tx requests (and GSO extras), and
reap the responses.

Each slot takes a request id; the id remembers its grant, its frame and its in-flight
packet.  A slot's response ends that slot (its grant is ended or its pool frame comes
back); the packet is done when its last slot is answered.  The first slot's size is the
whole packet's length, later slots carry their own.
"""

from __future__ import annotations

from ...abi import netif
from ...abi.grant_table import DOMID_SELF
from .. import records as r
from ..types import Buffer, WBuffer
from .codecs import END_REF, EXTRA_GSO, PIECE, PKT, TX_DONE, TX_INFLIGHT, TX_REQ, TX_RSP, TX_SLOT
from .pool import PoolView

ENTRY = 12


class Stack:
    """A u16 stack in a buffer: element 0 is the count, then the entries."""

    __slots__ = ("v",)

    def __init__(self, buf: WBuffer) -> None:
        self.v = memoryview(buf).cast("B").cast("H")
        if len(self.v) < 1:
            raise ValueError("stack buffer too small")
        if self.v[0] > len(self.v) - 1:
            raise ValueError(f"stack count {self.v[0]} above its capacity {len(self.v) - 1}")

    @property
    def count(self) -> int:
        return int(self.v[0])

    def pop(self) -> int:
        n = self.v[0] - 1
        self.v[0] = n
        return int(self.v[n + 1])  # the caller checked ``count`` first

    def push(self, x: int) -> None:
        n = self.v[0]
        if n + 1 >= len(self.v):
            raise ValueError("stack overflow: a value was given back twice")
        self.v[n + 1] = x
        self.v[0] = n + 1


def netfront_tx_post(
    vec_pkts: Buffer,
    vec_pieces: WBuffer,
    start: int,
    npkts: int,
    pool: Buffer,
    slots: WBuffer,
    inflight: WBuffer,
    id_stack: WBuffer,
    pkt_stack: WBuffer,
    free_ring: int,
    reqs_out: WBuffer,
) -> tuple[int, int, int, int, int]:
    """Post packets ``start..`` while the ring (``free_ring`` entries), the ids and the
    in-flight slots last: requests into ``reqs_out`` (12-byte entries).  A pool piece
    without a ref takes its pool grant.  Returns (next packet, requests, bytes, packets
    with GSO, packets)."""
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    sl = memoryview(slots).cast("B")
    inf = memoryview(inflight).cast("B")
    ro = memoryview(reqs_out).cast("B")
    ids, pks = Stack(id_stack), Stack(pkt_stack)
    p = PoolView(pool)  # type: ignore[arg-type]
    if len(ro) < free_ring * ENTRY or len(vp) < (start + npkts) * r.PKT.size:
        raise ValueError("netfront_tx_post: buffers too small")
    nreq = nbytes = gso_pkts = 0
    for j in range(start, start + npkts):
        piece0, npieces, flags, length, tag, gso_size, gso_type, _e, _cs, _co = PKT.unpack_from(
            vp, j * r.PKT.size
        )
        need = npieces + (1 if gso_size else 0)
        if need > free_ring - nreq or npieces > ids.count or pks.count == 0:
            return j, nreq, nbytes, gso_pkts, j - start
        if npieces == 0 or npieces > len(sl) // r.TX_SLOT.size:
            raise ValueError(f"netfront_tx_post: packet {j} has {npieces} pieces")
        if (piece0 + npieces) * r.PIECE.size > len(vpc):
            raise ValueError("netfront_tx_post: pieces past the vector")
        # check the whole packet before any of it goes on the ring
        refs = []
        total = 0
        for k in range(piece0, piece0 + npieces):
            frame, off, plen, ref, domid, pflags = PIECE.unpack_from(vpc, k * r.PIECE.size)
            if not 1 <= plen <= r.PAGE_SIZE or off + plen > r.PAGE_SIZE or domid != DOMID_SELF:
                raise ValueError(
                    f"netfront_tx_post: packet {j}: bad piece ({frame}, {off}, {plen}, d{domid})"
                )
            if ref == r.NONE32 and pflags & r.PIECE_POOL and p.granted and 0 <= frame < p.nr_frames:
                ref = int(p.refs[frame])
            if ref == r.NONE32:
                raise ValueError(f"netfront_tx_post: packet {j}: piece on frame {frame} has no grant")
            refs.append(ref)
            total += plen
        if total != length or length > r.MAX_PACKET:  # the first request carries the length
            raise ValueError(f"netfront_tx_post: packet {j} of {length} bytes has {total} in its pieces")
        slot = pks.pop()
        if slot >= len(inf) // r.TX_INFLIGHT.size:
            raise ValueError(f"netfront_tx_post: in-flight slot {slot} out of range")
        TX_INFLIGHT.pack_into(inf, slot * r.TX_INFLIGHT.size, tag, npieces, 0)
        f0 = netif.tx_csum_flags(flags) | (netif.NETTXF_extra_info if gso_size else 0)
        for i, k in enumerate(range(piece0, piece0 + npieces)):
            frame, off, plen, _ref, _domid, pflags = PIECE.unpack_from(vpc, k * r.PIECE.size)
            rid = ids.pop()
            if rid >= len(sl) // r.TX_SLOT.size:
                raise ValueError(f"netfront_tx_post: request id {rid} out of range")
            TX_SLOT.pack_into(sl, rid * r.TX_SLOT.size, refs[i], frame, slot, pflags)
            rflags = f0 if i == 0 else 0
            if i < npieces - 1:
                rflags |= netif.NETTXF_more_data
            base = nreq * ENTRY
            ro[base : base + ENTRY] = bytes(ENTRY)
            TX_REQ.pack_into(ro, base, refs[i], off, rflags, rid, length if i == 0 else plen)
            nreq += 1
            if i == 0 and gso_size:
                base = nreq * ENTRY
                ro[base : base + ENTRY] = bytes(ENTRY)
                EXTRA_GSO.pack_into(ro, base, netif.XEN_NETIF_EXTRA_TYPE_GSO, 0, gso_size, gso_type, 0)
                nreq += 1
        nbytes += length
        gso_pkts += 1 if gso_size else 0
    end = start + npkts
    return end, nreq, nbytes, gso_pkts, npkts


Completed = tuple[int, int, int, int, int, int, int, int, int]


def netfront_tx_complete(
    rsps: Buffer,
    n: int,
    pool: WBuffer,
    slots: WBuffer,
    inflight: WBuffer,
    id_stack: WBuffer,
    pkt_stack: WBuffer,
    done_out: WBuffer,
    end_out: WBuffer,
) -> Completed:
    """Consume ``n`` copied-out tx responses.  A slot's own grant goes to ``end_out`` as
    (ref, frame or NONE32) for the caller to end; a pool frame goes back to the pool.  A
    finished packet with a tag goes to ``done_out`` as (tag, status).  Returns (responses
    consumed, done, ends, completed OKAY, backend errors, backend drops, fatal, detail, NULL
    responses skipped)."""
    q = memoryview(rsps).cast("B")
    sl = memoryview(slots).cast("B")
    inf = memoryview(inflight).cast("B")
    do = memoryview(done_out).cast("B")
    eo = memoryview(end_out).cast("B")
    ids, pks = Stack(id_stack), Stack(pkt_stack)
    p = PoolView(pool)
    nr_ents = len(sl) // r.TX_SLOT.size
    if len(q) < n * ENTRY or len(do) < n * r.TX_DONE.size or len(eo) < n * r.END_REF.size:
        raise ValueError("netfront_tx_complete: buffers too small")
    ndone = nend = ok = err = dropped = nulls = 0
    for i in range(n):
        rid, status = TX_RSP.unpack_from(q, i * ENTRY)
        if status == netif.NETIF_RSP_NULL:
            nulls += 1  # an extra-info slot's response (counted: a backend may send more)
            continue
        if rid >= nr_ents or TX_SLOT.unpack_from(sl, rid * r.TX_SLOT.size)[2] == r.NONE16:
            return i, ndone, nend, ok, err, dropped, r.TxDoneFatal.ID_NOT_IN_FLIGHT, rid, nulls
        ref, frame, slot, pflags = TX_SLOT.unpack_from(sl, rid * r.TX_SLOT.size)
        if slot >= len(inf) // r.TX_INFLIGHT.size:
            raise ValueError(f"netfront_tx_complete: in-flight slot {slot} out of range")
        TX_SLOT.pack_into(sl, rid * r.TX_SLOT.size, ref, frame, r.NONE16, 0)
        ids.push(rid)
        if pflags & r.PIECE_OWN_GRANT:
            END_REF.pack_into(eo, nend * r.END_REF.size, ref, frame if pflags & r.PIECE_POOL else r.NONE32)
            nend += 1
        elif pflags & r.PIECE_POOL:
            p.push(frame)
        tag, left, pstatus = TX_INFLIGHT.unpack_from(inf, slot * r.TX_INFLIGHT.size)
        if status != netif.NETIF_RSP_OKAY and pstatus == 0:
            pstatus = status & 0xFFFF
        left = (left - 1) & 0xFFFF
        TX_INFLIGHT.pack_into(inf, slot * r.TX_INFLIGHT.size, tag, left, pstatus)
        if left == 0:
            signed = pstatus - 0x10000 if pstatus & 0x8000 else pstatus
            if signed == netif.NETIF_RSP_OKAY:
                ok += 1
            elif signed == netif.NETIF_RSP_DROPPED:
                dropped += 1
            else:
                err += 1
            if tag != r.NONE32:
                TX_DONE.pack_into(do, ndone * r.TX_DONE.size, tag, pstatus, 0)
                ndone += 1
            pks.push(slot)
    return n, ndone, nend, ok, err, dropped, r.TxDoneFatal.NONE, 0, nulls
