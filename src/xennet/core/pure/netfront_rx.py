"""netfront receive, the batch kernels: post rx buffers, assemble copied-out responses into
packets (a pure function), and build the packets the guest keeps.

As in Linux netfront, the request posted at ring index ``i`` has id ``i & mask``, so the
buffer under an extra-info slot (which carries no id) is known and can be recycled.

Assembly takes every slot of a packet, then validates it; a bad packet is dropped whole
(``RxError``), an impossible ring is the end of the device (``RxFatal``):

* fatal: a response where no buffer is posted, an id that is not the one posted in that
  slot, extra info announced but not produced, an endless extra chain, a packet that runs
  past the responses produced;
* dropped: more than 18 data slots (19 when the first holds at most 256 bytes), an ERROR or
  DROPPED status, offset + size past the page, an empty first slot, a bad extra type, GSO
  that was not negotiated, a zero GSO size or a GSO type that is neither TCPv4 nor TCPv6,
  and more bytes than the protocol's 65535.
"""

from __future__ import annotations

from ...abi import netif
from ...abi.grant_table import DOMID_SELF
from .. import records as r
from ..types import Buffer, WBuffer
from .codecs import END_REF, EXTRA_GSO, PIECE, PKT, RX_PKT, RX_REQ, RX_RSP, RX_SLOT
from .pool import PoolView, pop_counted

ENTRY = 8
RX_COPY_THRESHOLD = 256  # bytes pulled into a private head; the rest stays in the rx buffers
MAX_PACKET = r.MAX_PACKET
MAX_DATA = 1024

E, F = r.RxError, r.RxFatal


def netfront_rx_post(
    slots: WBuffer, start: int, mask: int, pairs: Buffer, npairs: int, reqs_out: WBuffer
) -> int:
    """Post the (ref, frame) ``pairs`` as rx requests from ring index ``start``, while the
    slot's id is free.  Returns how many were posted (the rest are the caller's again)."""
    sl = memoryview(slots).cast("B")
    pr = memoryview(pairs).cast("B")
    ro = memoryview(reqs_out).cast("B")
    if mask + 1 > len(sl) // r.RX_SLOT.size or len(pr) < npairs * r.END_REF.size or len(ro) < npairs * ENTRY:
        raise ValueError("netfront_rx_post: buffers too small")
    for k in range(npairs):
        rid = (start + k) & mask
        if RX_SLOT.unpack_from(sl, rid * r.RX_SLOT.size)[0] != r.NONE32:
            return k  # that slot's buffer has not come back yet
        ref, frame = END_REF.unpack_from(pr, k * r.END_REF.size)
        RX_SLOT.pack_into(sl, rid * r.RX_SLOT.size, frame, ref)
        RX_REQ.pack_into(ro, k * ENTRY, rid, ref)
    return npairs


def netfront_rx_assemble(
    rsps: Buffer, n: int, cons: int, mask: int, slots: Buffer, gso_ok: bool, out: WBuffer, max_pkts: int
) -> tuple[int, int, int, int]:
    """Group ``n`` copied-out responses (the first at ring index ``cons``) into packets
    (RX_PKT records).  Returns (responses consumed, packets, fatal, detail); on a fatal
    fault the packets before it are returned with it."""
    q = memoryview(rsps).cast("B")
    sl = memoryview(slots).cast("B")
    o = memoryview(out).cast("B")
    if len(q) < n * ENTRY or len(o) < max_pkts * r.RX_PKT.size or mask + 1 > len(sl) // r.RX_SLOT.size:
        raise ValueError("netfront_rx_assemble: buffers too small")
    pos = npkts = 0

    def posted(p: int) -> bool:
        return bool(RX_SLOT.unpack_from(sl, ((cons + p) & mask) * r.RX_SLOT.size)[0] != r.NONE32)

    while pos < n and npkts < max_pkts:
        start = pos
        idx = (cons + pos) & mask
        if not posted(pos):
            return start, npkts, F.NO_BUFFER_POSTED, idx
        rid, _off, flags, status = RX_RSP.unpack_from(q, pos * ENTRY)
        if rid != idx:
            return start, npkts, F.ID_NOT_ISSUED, rid
        pos += 1
        extras: list[int] = []  # entry positions
        if flags & netif.NETRXF_extra_info:
            extras, end = netif.extra_chain(q, pos, n, ENTRY)
            for p in extras:
                if not posted(p):
                    return start, npkts, F.NO_BUFFER_POSTED, (cons + p) & mask
            if end == netif.EXTRAS_MISSING:
                return start, npkts, F.EXTRA_NOT_PRODUCED, 0
            if end == netif.EXTRAS_ENDLESS:
                return start, npkts, F.ENDLESS_EXTRA, 0
            pos += len(extras)
        nextras = len(extras)
        max_slots = netif.XEN_NETIF_NR_SLOTS_MIN + (1 if 0 <= status <= RX_COPY_THRESHOLD else 0)
        data = [start]  # entry positions of the data slots
        more_data = flags & netif.NETRXF_more_data
        while more_data:
            if pos >= n:
                return start, npkts, F.PAST_PRODUCED, 0
            idx = (cons + pos) & mask
            if not posted(pos):
                return start, npkts, F.NO_BUFFER_POSTED, idx
            srid, _o, sflags, _s = RX_RSP.unpack_from(q, pos * ENTRY)
            if srid != idx:
                return start, npkts, F.ID_NOT_ISSUED, srid
            if len(data) == MAX_DATA:  # cannot happen: the ring holds fewer entries
                raise ValueError(f"netfront_rx_assemble: a packet of more than {MAX_DATA} slots")
            data.append(pos)
            pos += 1
            more_data = sflags & netif.NETRXF_more_data
        error, length, gso_size, gso_type = _validate(q, data, extras, max_slots, gso_ok)
        RX_PKT.pack_into(
            o,
            npkts * r.RX_PKT.size,
            start,
            len(data),
            nextras,
            error,
            length,
            flags,
            gso_size,
            gso_type,
            0,
            0,
        )
        npkts += 1
    return pos, npkts, F.NONE, 0


def _validate(
    q: memoryview, data: list[int], extras: list[int], max_slots: int, gso_ok: bool
) -> tuple[int, int, int, int]:
    """(error, length, gso size, gso type) of an assembled packet."""
    length = 0
    error = E.OK
    if len(data) > max_slots:
        error = E.TOO_MANY_SLOTS
    for p in data:
        _rid, off, _flags, status = RX_RSP.unpack_from(q, p * ENTRY)
        if error == E.OK:
            if status < 0:
                error = E.BACKEND_ERROR if status == netif.NETIF_RSP_ERROR else E.BACKEND_DROPPED
            elif off + status > r.PAGE_SIZE:
                error = E.OFFSET_SIZE_PAST_PAGE
        length += max(status, 0)
    if error == E.OK and RX_RSP.unpack_from(q, data[0] * ENTRY)[3] == 0:
        error = E.EMPTY_FIRST_SLOT
    gso_size = gso_type = 0
    for p in extras:
        etype = q[p * ENTRY]
        if error != E.OK:
            break
        if not netif.extra_type_valid(etype):
            error = E.BAD_EXTRA_TYPE
        elif etype == netif.XEN_NETIF_EXTRA_TYPE_GSO:
            _t, _f, size, gtype, _feat = EXTRA_GSO.unpack_from(q, p * ENTRY)
            fault = netif.gso_fault(size, gtype)
            if not gso_ok:
                error = E.UNNEGOTIATED_GSO
            elif fault != netif.GSO_OK:
                error = E.GSO_SIZE_ZERO if fault == netif.GSO_SIZE_ZERO else E.BAD_GSO_TYPE
            else:
                gso_size, gso_type = size, gtype
    if error == E.OK and length > MAX_PACKET:
        error = E.OVERSIZE
    if error != E.OK:
        gso_size = gso_type = 0
    return error, min(length, 0xFFFFFFFF), gso_size, gso_type


def _positions(first: int, nslots: int, nextras: int) -> tuple[list[int], list[int]]:
    data = [first + (nextras + k if k else 0) for k in range(nslots)]
    extras = [first + 1 + k for k in range(nextras)]
    return data, extras


def netfront_rx_slot_refs(
    rsps: Buffer, pkts: Buffer, start: int, npkts: int, cons: int, mask: int, slots: Buffer, out: WBuffer
) -> int:
    """(ref, frame) of every data slot of the good packets ``start..``: the grants a
    per-packet netfront ends before it reads them.  Returns how many."""
    tp = memoryview(pkts).cast("B")
    sl = memoryview(slots).cast("B")
    o = memoryview(out).cast("B")
    if len(tp) < (start + npkts) * r.RX_PKT.size or mask + 1 > len(sl) // r.RX_SLOT.size:
        raise ValueError("netfront_rx_slot_refs: buffers too small")
    k = 0
    for j in range(start, start + npkts):
        first, nslots, nextras, error, *_ = RX_PKT.unpack_from(tp, j * r.RX_PKT.size)
        if error:
            continue
        for p in _positions(first, nslots, nextras)[0]:
            if (k + 1) * r.END_REF.size > len(o):
                raise ValueError("netfront_rx_slot_refs: out too small")
            frame, ref = RX_SLOT.unpack_from(sl, ((cons + p) & mask) * r.RX_SLOT.size)
            END_REF.pack_into(o, k * r.END_REF.size, ref, frame)
            k += 1
    return k


Built = tuple[int, int, int, int, int, int, int]


def netfront_rx_build(
    rsps: Buffer,
    pkts: WBuffer,
    start: int,
    npkts: int,
    cons: int,
    mask: int,
    slots: WBuffer,
    mem: WBuffer,
    priv_pool: WBuffer,
    ended: bool,
    vec_pkts: WBuffer,
    vec_pieces: WBuffer,
    piece_base: int,
    piece_cap: int,
    recycle_out: WBuffer,
    recycle_base: int,
) -> Built:
    """Take the slots of packets ``start..``: a good packet gets a private head with its
    first 256 bytes (``vec_pkts[j]``, pieces from ``piece_base``), the rest stays in its rx
    buffers; every buffer no piece keeps goes to ``recycle_out`` as (ref, frame), ref
    NONE32 when its grant was ended already (``ended``: a per-packet netfront ended the
    good packets' data slots).  Stops before a packet when the private pool or the pieces
    run out.  Returns (next packet, pieces end, recycle end, packets, bytes, slots, GSO)."""
    q = memoryview(rsps).cast("B")
    tp = memoryview(pkts).cast("B")
    sl = memoryview(slots).cast("B")
    m = memoryview(mem).cast("B")
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    ro = memoryview(recycle_out).cast("B")
    if len(vp) < (start + npkts) * r.PKT.size or len(vpc) < piece_cap * r.PIECE.size:
        raise ValueError("netfront_rx_build: buffers too small")
    if len(tp) < (start + npkts) * r.RX_PKT.size or mask + 1 > len(sl) // r.RX_SLOT.size:
        raise ValueError("netfront_rx_build: buffers too small")
    hp = PoolView(priv_pool)
    npiece, nrec = piece_base, recycle_base
    ok = nbytes = nslots_total = gso = 0

    def recycle(ref: int, frame: int) -> None:
        nonlocal nrec
        if (nrec + 1) * r.END_REF.size > len(ro):
            raise ValueError("netfront_rx_build: recycle_out too small")
        END_REF.pack_into(ro, nrec * r.END_REF.size, ref, frame)
        nrec += 1

    def take(p: int) -> tuple[int, int]:
        """The slot's (frame, ref); the slot is free again."""
        off = ((cons + p) & mask) * r.RX_SLOT.size
        frame, ref = RX_SLOT.unpack_from(sl, off)
        RX_SLOT.pack_into(sl, off, r.NONE32, 0)
        return frame, ref

    for j in range(start, start + npkts):
        first, nslots, nextras, error, length, flags, gso_size, gso_type, _p0, _p1 = RX_PKT.unpack_from(
            tp, j * r.RX_PKT.size
        )
        if (first + nextras + nslots) * ENTRY > len(q):
            raise ValueError(f"netfront_rx_build: packet {j} names responses past the batch")
        if error >= len(r.RxError):
            raise ValueError(f"netfront_rx_build: packet {j} has error code {error}")
        data, extras = _positions(first, nslots, nextras)
        if error:
            for p in data + extras:
                recycle(*reversed(take(p)))
            PKT.pack_into(vp, j * r.PKT.size, npiece, 0, 0, 0, j, 0, 0, error, 0, 0)
            continue
        if hp.count == 0 or npiece + 1 + nslots > piece_cap:
            return j, npiece, nrec, ok, nbytes, nslots_total, gso
        head = pop_counted(hp)
        if (head + 1) * r.PAGE_SIZE > len(m):
            raise ValueError(f"netfront_rx_build: frame {head} outside memory")
        want = min(RX_COPY_THRESHOLD, length)
        piece0 = npiece
        PIECE.pack_into(vpc, npiece * r.PIECE.size, head, 0, want, r.NONE32, DOMID_SELF, r.PIECE_PRIV)
        npiece += 1
        pulled = 0
        for p in data:
            _rid, off, _f, status = RX_RSP.unpack_from(q, p * ENTRY)
            frame, ref = take(p)
            n = min(status, want - pulled)
            if n:
                if (frame + 1) * r.PAGE_SIZE > len(m):
                    raise ValueError(f"netfront_rx_build: frame {frame} outside memory")
                dst = head * r.PAGE_SIZE + pulled
                src = frame * r.PAGE_SIZE + off
                m[dst : dst + n] = m[src : src + n]
                pulled += n
            if status > n:
                PIECE.pack_into(
                    vpc, npiece * r.PIECE.size, frame, off + n, status - n, ref, DOMID_SELF, r.PIECE_POOL
                )
                npiece += 1
            else:
                recycle(r.NONE32 if ended else ref, frame)
        for p in extras:
            recycle(*reversed(take(p)))  # untouched by the backend: post it again
        PKT.pack_into(
            vp,
            j * r.PKT.size,
            piece0,
            npiece - piece0,
            netif.rx_csum_state(flags),
            length,
            j,
            gso_size,
            gso_type,
            0,
            0,
            0,
        )
        ok += 1
        nbytes += length
        nslots_total += nslots + nextras
        gso += 1 if gso_size else 0
    return start + npkts, npiece, nrec, ok, nbytes, nslots_total, gso
