"""netback transmit, the batch kernels: assembly of copied-out requests into packets, the
grant copies that build them, and their responses.

Assembly (``tx_assemble``) is a pure function, the shape of MirageOS's ``assemble.ml``: a
packet is its first slot, the extra-info chain, then data slots while ``more_data``.

* more than ``max_slots`` slots: the packet is answered with errors (TOO_MANY_SLOTS);
  more than ``fatal_slots``: the frontend is hostile and is disconnected (the check comes
  before each further slot is read, so assembly never reads past slot ``fatal_slots + 1``);
* a slot with offset + size > 4096, a bad extra type, a zero GSO size or a GSO type that is
  neither TCPv4 nor TCPv6: fatal;
* a GSO size under ``GSO_MIN_SIZE``: errors (it would cost whoever segments it too much);
* a packet whose slots hold more than its first slot says, or under 14 bytes: errors;
* zero-size slots are answered OKAY and never touched (XSA-448).

``tx_build`` pulls the first ``copy_len`` bytes (128, or the whole packet) into a head frame,
even across slots (XSA-423/432), and the rest into staging frames packed densely (copy
mode), or leaves up to ``map_frags`` slots as the guest's grants for the caller to map.
"""

from __future__ import annotations

from ...abi import netif
from ...abi.grant_table import DOMID_FIRST_RESERVED, DOMID_SELF, GNTCOPY_source_gref, GNTST_okay
from .. import records as r
from ..types import Buffer, WBuffer
from .codecs import (
    EXTRA_GSO,
    PIECE,
    PKT,
    S16,
    SEG_SIZE,
    SEG_STATUS_OFF,
    SEG_TAIL,
    SEG_TAIL_OFF,
    SIDE_GREF,
    SIDE_VIRT,
    TX_PKT,
    TX_REQ,
    TX_RSP,
)
from .pool import PoolView, pop_counted

ENTRY = 12  # a tx ring entry: the request (12 bytes), its response or an extra info
ETH_HLEN = 14

E, F = r.TxError, r.TxFatal

# what the kernels return
Assembled = tuple[int, int, int, int, int]  # consumed entries, packets, fatal, detail a, detail b


def netback_tx_assemble(
    reqs: Buffer, n: int, max_slots: int, fatal_slots: int, out: WBuffer, max_pkts: int
) -> Assembled:
    """Group ``n`` copied-out entries into packets (TX_PKT records in ``out``), at most
    ``max_pkts``.  Stops at the first fatal fault: the packets before it are returned with it."""
    q = memoryview(reqs).cast("B")
    o = memoryview(out).cast("B")
    if len(q) < n * ENTRY or len(o) < max_pkts * r.TX_PKT.size or not 0 <= n <= 0xFFFF:
        raise ValueError("netback_tx_assemble: buffers too small")
    pos = npkts = 0
    while pos < n and npkts < max_pkts:
        start = pos
        gref, offset, flags, rid, size = TX_REQ.unpack_from(q, pos * ENTRY)
        pos += 1
        nextras = 0
        gso: tuple[int, int] | None = None
        mcast: tuple[int, bytes] | None = None  # (kind, address): the last of each type wins
        mcast_add: bytes | None = None
        mcast_del: bytes | None = None
        if flags & netif.NETTXF_extra_info:
            extras, end = netif.extra_chain(q, pos, n, ENTRY)
            pos += len(extras)
            nextras = len(extras)
            for e in (k * ENTRY for k in extras):
                etype = q[e]
                if not netif.extra_type_valid(etype):
                    return start, npkts, F.BAD_EXTRA_TYPE, etype, 0
                if etype == netif.XEN_NETIF_EXTRA_TYPE_GSO:
                    _t, _f, gsize, gtype, _feat = EXTRA_GSO.unpack_from(q, e)
                    gso = (gsize, gtype)
                elif etype == netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD:
                    mcast_add = bytes(q[e + 2 : e + 8])
                elif etype == netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL:
                    mcast_del = bytes(q[e + 2 : e + 8])
            if end == netif.EXTRAS_MISSING:
                return start, npkts, F.MISSING_EXTRA_INFO, 0, 0
            if end == netif.EXTRAS_ENDLESS:
                return start, npkts, F.BAD_EXTRA_TYPE, q[extras[-1] * ENTRY], 0
        if mcast_add is not None:
            mcast = (r.TXK_MCAST_ADD, mcast_add)
        elif mcast_del is not None:
            mcast = (r.TXK_MCAST_DEL, mcast_del)
        if mcast is not None:
            # multicast control: answered alone; data slots, if any, are read as packets
            TX_PKT.pack_into(
                o, npkts * r.TX_PKT.size, start, 1, nextras, 0, size, 0, flags, 0, 0, mcast[0], mcast[1], 0
            )
            npkts += 1
            continue
        remaining = size  # the first slot's size is the packet's; later slots subtract theirs
        count = 1
        error = E.OK
        more_data = flags & netif.NETTXF_more_data
        while more_data:
            if count >= fatal_slots:
                return start, npkts, F.TOO_MANY_SLOTS, count + 1, 0
            if pos >= n:
                return start, npkts, F.TRUNCATED_PACKET, 0, 0
            _g, soff, sflags, _id, ssize = TX_REQ.unpack_from(q, pos * ENTRY)
            pos += 1
            count += 1
            if soff + ssize > r.PAGE_SIZE:
                return start, npkts, F.SLOT_CROSSES_PAGE, soff, ssize
            if count > max_slots and error == E.OK:
                error = E.TOO_MANY_SLOTS
            if ssize > remaining and error == E.OK:
                error = E.SLOTS_BIGGER_THAN_PACKET
            remaining -= ssize
            more_data = sflags & netif.NETTXF_more_data
        first_size = max(remaining, 0)
        if offset + first_size > r.PAGE_SIZE:
            return start, npkts, F.SLOT_CROSSES_PAGE, offset, first_size
        if error == E.OK and size < ETH_HLEN:
            error = E.RUNT
        gso_size = gso_type = 0
        if gso is not None:
            gso_size, gso_type = gso
            fault = netif.gso_fault(gso_size, gso_type)
            if fault == netif.GSO_SIZE_ZERO:
                return start, npkts, F.GSO_SIZE_ZERO, 0, 0
            if fault == netif.GSO_BAD_TYPE:
                return start, npkts, F.BAD_GSO_TYPE, gso_type, 0
            if error == E.OK and gso_size < r.GSO_MIN_SIZE:
                error = E.GSO_SIZE_TOO_SMALL
        TX_PKT.pack_into(
            o, npkts * r.TX_PKT.size, start, count, nextras, error, size, first_size, flags,
            gso_size, gso_type, r.TXK_DATA, bytes(6), 0,
        )  # fmt: skip
        npkts += 1
    return pos, npkts, F.NONE, 0, 0


def _slots(
    q: memoryview, first: int, nslots: int, nextras: int, first_size: int
) -> list[tuple[int, int, int, int]]:
    """(gref, offset, size, id) of each data slot; the first slot's size is its own share."""
    out = []
    for k in range(nslots):
        idx = first if k == 0 else first + nextras + k
        gref, offset, _flags, rid, size = TX_REQ.unpack_from(q, idx * ENTRY)
        out.append((gref, offset, first_size if k == 0 else size, rid))
    return out


def _seg_from_grant(o: memoryview, i: int, gref: int, goff: int, domid: int, virt: int, n: int) -> None:
    base = i * SEG_SIZE
    o[base : base + SEG_SIZE] = bytes(SEG_SIZE)
    SIDE_GREF.pack_into(o, base, gref, goff, domid)
    SIDE_VIRT.pack_into(o, base + 8, virt)
    SEG_TAIL.pack_into(o, base + SEG_TAIL_OFF, n, GNTCOPY_source_gref, 0)


def _needs(slots: list[tuple[int, int, int, int]], head_len: int, map_frags: int) -> tuple[int, int, int]:
    """(frames, segments, pieces) a packet's build takes, counted before anything is taken."""
    frames = pieces = 1  # the head
    segs = 0
    pulled = mapped = staged = 0
    for _gref, _off, size, _id in slots:
        if size == 0:
            continue
        take = min(size, head_len - pulled)
        if take:
            segs += 1
            pulled += take
            pieces += 1 if map_frags else 0  # a run of the head's grants
        rest = size - take
        if not rest:
            continue
        if map_frags and mapped < map_frags:
            mapped += 1
            pieces += 1
            continue
        # staged densely: the frames of [staged, staged + rest) of the staging stream
        segs += (staged + rest - 1) // r.PAGE_SIZE - staged // r.PAGE_SIZE + 1
        staged += rest
    stage_frames = -(-staged // r.PAGE_SIZE)
    return frames + stage_frames, segs, pieces + stage_frames


Built = tuple[int, int, int]  # packets done, segments, pieces


def netback_tx_build(
    reqs: Buffer,
    pkts: Buffer,
    start: int,
    npkts: int,
    front_domid: int,
    copy_len: int,
    map_frags: int,
    mem_base: int,
    pool: WBuffer,
    segs: WBuffer,
    seg_base: int,
    seg_cap: int,
    seg_ranges: WBuffer,
    vec_pkts: WBuffer,
    vec_pieces: WBuffer,
    piece_base: int,
    piece_cap: int,
) -> Built:
    """Plan packets ``start..start+npkts`` of an assembly: for TX_PKT ``i``, ``xn_pkt`` ``i``
    of ``vec_pkts`` (refused or control packets get no pieces), its pieces from
    ``piece_base`` on, and its grant copies from ``seg_base`` on; ``seg_ranges[i]`` is
    (first segment, count).  Stops early, before a packet, when the pool, the segments or
    the pieces would run out.  Returns (next packet, segments end, pieces end)."""
    q = memoryview(reqs).cast("B")
    tp = memoryview(pkts).cast("B")
    so = memoryview(segs).cast("B")
    sr = memoryview(seg_ranges).cast("B").cast("I")
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    end = start + npkts
    if len(so) < seg_cap * SEG_SIZE or len(vpc) < piece_cap * r.PIECE.size or len(sr) < 2 * end:
        raise ValueError("netback_tx_build: buffers smaller than their caps")
    if len(vp) < end * r.PKT.size or len(tp) < end * r.TX_PKT.size:
        raise ValueError("netback_tx_build: packet buffers too small")
    if not 0 <= seg_base <= seg_cap or not 0 <= piece_base <= piece_cap:
        raise ValueError("netback_tx_build: bases past their caps")
    if not 0 <= front_domid < DOMID_FIRST_RESERVED:
        raise ValueError(f"netback_tx_build: domid {front_domid} is not a guest's")
    p = PoolView(pool)
    nseg, npiece = seg_base, piece_base
    for j in range(start, end):
        (first, nslots, nextras, error, size, first_size, flags, gso_size, gso_type, kind, _mc, _pad) = (
            TX_PKT.unpack_from(tp, j * r.TX_PKT.size)
        )
        if ((first + nextras + nslots - 1 if nslots > 1 else first) + 1) * ENTRY > len(q):
            raise ValueError(f"netback_tx_build: packet {j} names requests past the batch")
        if error >= len(r.TxError):
            raise ValueError(f"netback_tx_build: packet {j} has error code {error}")
        if error or kind != r.TXK_DATA:
            PKT.pack_into(vp, j * r.PKT.size, npiece, 0, 0, 0, j, 0, 0, error, 0, 0)
            sr[2 * j], sr[2 * j + 1] = nseg, 0
            continue
        slots = _slots(q, first, nslots, nextras, first_size)
        if any(s_off + s_size > r.PAGE_SIZE for _g, s_off, s_size, _i in slots):
            raise ValueError(f"netback_tx_build: packet {j} has a slot across its page (not assembled?)")
        head_len = min(size, copy_len)
        frames, segs_needed, pieces_needed = _needs(slots, head_len, map_frags)
        if p.count < frames or nseg + segs_needed > seg_cap or npiece + pieces_needed > piece_cap:
            return j, nseg, npiece
        head = pop_counted(p)
        piece0 = npiece
        seg0 = nseg
        PIECE.pack_into(vpc, npiece * r.PIECE.size, head, 0, 0, r.NONE32, DOMID_SELF, r.PIECE_POOL)
        npiece += 1
        pulled = 0
        mapped = 0
        stage = -1  # the piece index of the staging frame being filled
        stage_frame = 0
        stage_off = r.PAGE_SIZE
        run_pieces: list[tuple[int, int, int]] = []
        for gref, off, ssize, _id in slots:
            if ssize == 0:
                continue  # answered OKAY, never dereferenced (XSA-448)
            take = min(ssize, head_len - pulled)
            if take:
                _seg_from_grant(
                    so, nseg, gref, off, front_domid, mem_base + head * r.PAGE_SIZE + pulled, take
                )
                nseg += 1
                run_pieces.append((gref, off, take))
                pulled += take
            rest, soff = ssize - take, off + take
            if not rest:
                continue
            if map_frags and mapped < map_frags:
                # the guest's own grant: the caller maps it (data=map)
                PIECE.pack_into(vpc, npiece * r.PIECE.size, gref, soff, rest, r.NONE32, front_domid, 0)
                npiece += 1
                mapped += 1
                continue
            while rest:
                if stage_off == r.PAGE_SIZE:
                    frame = pop_counted(p)
                    stage, stage_frame, stage_off = npiece, frame, 0
                    PIECE.pack_into(
                        vpc, npiece * r.PIECE.size, frame, 0, 0, r.NONE32, DOMID_SELF, r.PIECE_POOL
                    )
                    npiece += 1
                n = min(rest, r.PAGE_SIZE - stage_off)
                _seg_from_grant(
                    so, nseg, gref, soff, front_domid, mem_base + stage_frame * r.PAGE_SIZE + stage_off, n
                )
                nseg += 1
                plen = PIECE.unpack_from(vpc, stage * r.PIECE.size)[2]
                PIECE.pack_into(
                    vpc, stage * r.PIECE.size, stage_frame, 0, plen + n, r.NONE32, DOMID_SELF, r.PIECE_POOL
                )
                stage_off += n
                soff += n
                rest -= n
        # the head's length, now known
        PIECE.pack_into(vpc, piece0 * r.PIECE.size, head, 0, pulled, r.NONE32, DOMID_SELF, r.PIECE_POOL)
        if map_frags:
            # where the head's bytes came from, so a bridge can forward them by grant copy
            for gref, off, n in run_pieces:
                PIECE.pack_into(vpc, npiece * r.PIECE.size, gref, off, n, r.NONE32, front_domid, r.PIECE_RUN)
                npiece += 1
        npieces = npiece - piece0
        PKT.pack_into(
            vp, j * r.PKT.size, piece0, npieces, netif.tx_csum_state(flags), size, j,
            gso_size, gso_type, 0, 0, 0,
        )  # fmt: skip
        sr[2 * j], sr[2 * j + 1] = seg0, nseg - seg0
    return end, nseg, npiece


def netback_tx_respond(
    reqs: Buffer,
    pkts: Buffer,
    start: int,
    npkts: int,
    seg_ranges: Buffer,
    segs: Buffer,
    vec_pkts: WBuffer,
    vec_pieces: Buffer,
    pool: WBuffer,
    rsp_out: WBuffer,
    rsp_ranges: WBuffer,
    status_out: WBuffer,
) -> tuple[int, int, int, int, int, int, int]:
    """After the copies: the responses of packets ``start..start+npkts``, in packet order,
    into ``rsp_out`` from entry 0 (12 bytes each; ``rsp_ranges[i]`` is (first, count)).  A packet whose
    copy failed is refused (its frames go back to the pool, its GNTST status to
    ``status_out``).  Returns (responses, ok packets, ok bytes, ok slots, GSO packets,
    packets whose copy failed, multicast packets)."""
    q = memoryview(reqs).cast("B")
    tp = memoryview(pkts).cast("B")
    sr = memoryview(seg_ranges).cast("B").cast("I")
    so = memoryview(segs).cast("B")
    vp = memoryview(vec_pkts).cast("B")
    vpc = memoryview(vec_pieces).cast("B")
    ro = memoryview(rsp_out).cast("B")
    rr = memoryview(rsp_ranges).cast("B").cast("I")
    st = memoryview(status_out).cast("B").cast("h")
    end = start + npkts
    if len(rr) < 2 * end or len(st) < end or len(vp) < end * r.PKT.size or len(tp) < end * r.TX_PKT.size:
        raise ValueError("netback_tx_respond: buffers too small")
    p = PoolView(pool)
    nrsp = ok = ok_bytes = ok_slots = gso = bad = mcast = 0
    for j in range(start, end):
        first, nslots, nextras, error, size, _fs, _fl, gso_size, _gt, kind, _mc, _pad = TX_PKT.unpack_from(
            tp, j * r.TX_PKT.size
        )
        if ((first + nextras + nslots - 1 if nslots > 1 else first) + 1) * ENTRY > len(q):
            raise ValueError(f"netback_tx_respond: packet {j} names requests past the batch")
        status = netif.NETIF_RSP_OKAY
        st[j] = 0
        if kind != r.TXK_DATA:
            mcast += 1
        elif error:
            status = netif.NETIF_RSP_ERROR
        else:
            seg0, nsegs = sr[2 * j], sr[2 * j + 1]
            if (seg0 + nsegs) * SEG_SIZE > len(so):
                raise ValueError(f"netback_tx_respond: packet {j} names segments past the batch")
            gnt = next(
                (
                    s
                    for s in (
                        S16.unpack_from(so, (seg0 + k) * SEG_SIZE + SEG_STATUS_OFF)[0] for k in range(nsegs)
                    )
                    if s != GNTST_okay
                ),
                GNTST_okay,
            )
            if gnt != GNTST_okay:
                st[j] = gnt
                bad += 1
                status = netif.NETIF_RSP_ERROR
                _free_frames(vp, vpc, j, p)
                piece0 = PKT.unpack_from(vp, j * r.PKT.size)[0]
                PKT.pack_into(vp, j * r.PKT.size, piece0, 0, 0, 0, j, 0, 0, r.TxError.GRANT_COPY, 0, 0)
            else:
                ok += 1
                ok_bytes += size
                ok_slots += nslots
                gso += 1 if gso_size else 0
        if (nrsp + nslots + nextras) * ENTRY > len(ro):
            raise ValueError("netback_tx_respond: rsp_out too small")
        rr[2 * j] = nrsp
        for k in range(nslots):
            idx = first if k == 0 else first + nextras + k
            rid = TX_REQ.unpack_from(q, idx * ENTRY)[3]
            _put_rsp(ro, nrsp, rid, status)
            nrsp += 1
            if k == 0:
                for _ in range(nextras):
                    _put_rsp(ro, nrsp, 0, netif.NETIF_RSP_NULL)
                    nrsp += 1
        rr[2 * j + 1] = nrsp - rr[2 * j]
    return nrsp, ok, ok_bytes, ok_slots, gso, bad, mcast


def _put_rsp(ro: memoryview, i: int, rid: int, status: int) -> None:
    base = i * ENTRY
    ro[base : base + ENTRY] = bytes(ENTRY)
    TX_RSP.pack_into(ro, base, rid, status)


def _free_frames(vp: memoryview, vpc: memoryview, j: int, p: PoolView) -> None:
    piece0, npieces = PKT.unpack_from(vp, j * r.PKT.size)[:2]
    for k in range(piece0, piece0 + npieces):
        if (k + 1) * r.PIECE.size > len(vpc):
            raise ValueError("netback_tx_respond: pieces past the vector")
        frame, _off, _len, _ref, domid, flags = PIECE.unpack_from(vpc, k * r.PIECE.size)
        if flags & r.PIECE_POOL and domid == DOMID_SELF:
            p.push(frame)


def netback_tx_set_status(rsp_out: WBuffer, first: int, count: int, status: int) -> None:
    """Rewrite the status of responses ``first..first+count`` (not the NULLs of extras)."""
    ro = memoryview(rsp_out).cast("B")
    if status not in (netif.NETIF_RSP_DROPPED, netif.NETIF_RSP_ERROR, netif.NETIF_RSP_OKAY):
        raise ValueError(f"netback_tx_set_status: {status} is not a response status")
    if (first + count) * ENTRY > len(ro):
        raise ValueError("netback_tx_set_status: past the responses")
    for i in range(first, first + count):
        rid, old = TX_RSP.unpack_from(ro, i * ENTRY)
        if old != netif.NETIF_RSP_NULL:
            TX_RSP.pack_into(ro, i * ENTRY, rid, status)
