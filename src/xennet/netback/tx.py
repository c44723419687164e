"""netback transmit (guest -> backend): one batch of the tx ring at a time.

``process`` copies every pending request out of the ring once (XSA-155), assembles them into
packets and validates them (``netback_tx_assemble``: the rules are in ``core/pure/netback_tx.py``),
builds each packet with one grant-copy batch (the first ``copy_len`` bytes into a head
frame even across slots, XSA-423/432; the rest staged densely, or mapped with
``data="map"``), and answers.  A refused packet gets error responses; a hostile frontend
raises ``FatalFrontendError`` (the vif disconnects it).

The packets of a batch are a ``PacketVec`` on the backend's page pool (``TxBatch.vec``); with
``data="map"`` they are skbs on the guest's mapped pages instead (``TxBatch.skbs``), tagged
with their (domain, grant) so a bridge can forward them by grant copy (seed 003), and their
slots are answered when the skb is released.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from ..abi import netif
from ..abi.grant_table import DOMID_SELF
from ..core import kernels
from ..core import records as r
from ..core.pure.codecs import TX_PKT
from ..core.vec import Packet, PacketVec
from ..packet.frames import MAX_HEADER_LEN, Headers
from ..packet.gso import GsoError, check_headers
from ..packet.offload import gso_partial_fixup
from ..packet.pool import PoolPages, set_offloads, vec_skbs
from ..packet.skb import MAX_SKB_FRAGS, Buf, Foreign, Skb
from ..platform.base import Mapping, Page, Platform, PlatformError
from ..ring import BackRing, RingOverflow
from ..xenbus.ratelog import RateLimitedLog
from .errors import FatalFrontendError
from .stats import VifStats, grant_error_key

log = logging.getLogger(__name__)

ENTRY = 12
MAX_BATCH = 256  # requests per batch: one ring's worth
SEG_CAP = 4 * MAX_BATCH  # grant copies a batch can need: a head pull and staging per slot
PIECE_CAP = 4 * MAX_BATCH
MCAST_MAX = 64  # multicast addresses a frontend may subscribe (Linux: XEN_NETBK_MCAST_MAX)


@dataclass(frozen=True)
class TxLimits:
    """How many slots one packet may use, counted in total (its first slot included).

    The defaults are where Linux netback really draws the lines.  ``xenvif_count_requests``
    counts only the slots after the first, and checks that count before reading each further
    slot: a packet is refused once it would read a slot beyond XEN_NETBK_LEGACY_SLOTS_MAX
    (18) and is fatal once beyond ``fatal_skb_slots`` (20).  In total slots: up to 19 are
    taken, 20 and 21 get error responses, 22 or more disconnect the frontend.  (A netfront
    sends at most XEN_NETIF_NR_SLOTS_MIN = 18; Linux takes one more.)"""

    max_slots: int = netif.XEN_NETIF_NR_SLOTS_MIN + 1  # a packet of more slots gets error responses
    fatal_slots: int = 21  # a packet of more slots disconnects the frontend (fatal_skb_slots + 1)
    copy_len: int = 128  # bytes pulled into the linear head (XEN_NETBACK_TX_COPY_LEN)
    data: Literal["copy", "map"] = "copy"
    # a pass answers the packets that start within this many ring entries, then the next
    # pass takes the rest: the frontend refills while we copy (a ring's worth: one pass)
    batch_slots: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.max_slots <= self.fatal_slots <= 64:
            raise ValueError(
                f"tx limits: need 1 <= max_slots ({self.max_slots}) <= fatal_slots ({self.fatal_slots}) <= 64"
            )
        if not 14 <= self.copy_len <= 4096:
            raise ValueError(f"tx limits: copy_len {self.copy_len} outside 14..4096")
        if self.data not in ("copy", "map"):
            raise ValueError(f"tx limits: data={self.data!r}: copy or map")
        if not 1 <= self.batch_slots <= MAX_BATCH:
            raise ValueError(f"tx limits: batch_slots {self.batch_slots} outside 1..{MAX_BATCH}")


def _fatal_message(code: int, a: int, b: int) -> str:
    name = r.TX_FATAL_NAMES.get(code, str(code))
    details: dict[int, str] = {
        r.TxFatal.MISSING_EXTRA_INFO: "extra info announced but not produced",
        r.TxFatal.BAD_EXTRA_TYPE: f"invalid extra type {a} (or an endless extra info chain)",
        r.TxFatal.TOO_MANY_SLOTS: f"packet uses {a} or more slots",
        r.TxFatal.TRUNCATED_PACKET: "packet continues past the produced requests",
        r.TxFatal.SLOT_CROSSES_PAGE: f"slot offset {a} + size {b} crosses the page",
        r.TxFatal.GSO_SIZE_ZERO: "GSO size must not be zero",
        r.TxFatal.BAD_GSO_TYPE: f"bad GSO type {a}",
    }
    return f"tx: {details.get(code, name)}"


@dataclass
class TxBatch:
    """What one ``process`` delivered.  ``vec``'s packets with pieces and no error are the
    guest's frames (on our pool: release them with ``TxQueue.release``); ``skbs`` are the
    mapped packets of ``data="map"``."""

    vec: PacketVec
    skbs: list[Skb] = field(default_factory=list)
    notify: bool = False


@dataclass
class _Mapped:
    """A mapped packet waiting for its skb to be released: its responses, its maps."""

    responses: bytes
    maps: list[Mapping]
    frames: list[int]  # our head/staging frames
    skb: Skb


class TxQueue:
    def __init__(
        self,
        platform: Platform,
        front_domid: int,
        ring_map: Mapping,
        stats: VifStats,
        limits: TxLimits | None = None,
        pages: PoolPages | None = None,
    ) -> None:
        self.platform = platform
        self.pages = pages if pages is not None else PoolPages(platform, name="netback tx")
        self.front_domid = front_domid
        self.ring_map = ring_map
        self.stats = stats
        self.limits = limits or TxLimits()
        self.ring: BackRing[netif.TxRequest, netif.TxResponse] = BackRing(
            ring_map.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self.mcast: set[bytes] = set()  # addresses the frontend subscribed to, at most MCAST_MAX
        self.log = RateLimitedLog(log)  # what a guest does wrong, without flooding the log
        self.closed = False  # after teardown a late release must not touch the (unmapped) ring
        self._notify_pending = False
        n = self.ring.nr_ents
        self._reqs = bytearray(n * ENTRY)
        self._pkts = bytearray(n * r.TX_PKT.size)
        self._segs = bytearray(SEG_CAP * 24)
        self._ranges = bytearray(8 * n)
        self._rsps = bytearray(2 * n * ENTRY)
        self._rsp_ranges = bytearray(8 * n)
        self._status = bytearray(2 * n)
        self.vec = PacketVec(n, PIECE_CAP)
        self._gso_idx = bytearray(4 * n)  # gso_check: the packets to judge here
        self._mapped: dict[int, _Mapped] = {}  # map mode: packets whose skbs are out
        self._next_tag = 0
        self._map_frags = MAX_SKB_FRAGS if self.limits.data == "map" else 0
        # a fatal fault found behind good packets of a batch: raised on the next ``process``,
        # once those packets are answered and delivered (XSA-90, as Linux's tx_build_gops)
        self._fault: FatalFrontendError | None = None

    # --- the loop -----------------------------------------------------------------------

    def process(self) -> TxBatch:
        """Consume one pass of pending requests (the packets starting within ``batch_slots``
        entries).  The caller delivers the batch, releases ``vec`` with ``release``, and calls
        again while ``more()``."""
        ring = self.ring
        vec = self.vec
        vec.clear()
        batch = TxBatch(vec)
        if self._fault is not None:
            raise self._fault
        try:
            ring.check_overflow()
        except RingOverflow as exc:
            raise FatalFrontendError("ring_overflow", f"tx: {exc}") from None
        n = min(ring.unconsumed_requests(), MAX_BATCH)
        if n == 0:
            batch.notify = self._push()
            return batch
        kernels.ring_copy_out(ring.page, ring.req_cons, n, ENTRY, ring.nr_ents, self._reqs)
        lim = self.limits
        consumed, npkts, fatal, a, b = kernels.netback_tx_assemble(
            self._reqs, n, lim.max_slots, lim.fatal_slots, self._pkts, ring.nr_ents
        )
        if fatal:
            self._fault = FatalFrontendError(r.TX_FATAL_NAMES[fatal], _fatal_message(fatal, a, b))
            if not npkts:
                raise self._fault
        elif consumed > lim.batch_slots:
            npkts, consumed = self._cut(npkts, consumed)
        ring.req_cons = (ring.req_cons + consumed) & 0xFFFFFFFF
        nseg = self._build(npkts, consumed)
        if nseg:
            self.platform.mapper.copy_segments(self._segs, nseg)
            self.stats.grant_copy_ops += nseg
            self.stats.grant_copy_batches += 1
        nrsp, ok, nbytes, nslots, gso, bad, mcast = kernels.netback_tx_respond(
            self._reqs, self._pkts, 0, npkts, self._ranges, self._segs, vec.pkts, vec.pieces,
            self.pages.pool.buf, self._rsps, self._rsp_ranges, self._status,
        )  # fmt: skip
        vec.npkts = npkts
        refused = npkts - ok - bad - mcast
        if refused or bad or mcast:
            self._account_exceptions(npkts)
        if kernels.csum_setup(vec.pkts, vec.pieces, 0, npkts, self.pages.view):
            self._count_csum_failures(npkts)
        if gso:
            refused_gso, rbytes, rslots = self._check_gso(npkts)
            ok, nbytes, nslots, gso = ok - refused_gso, nbytes - rbytes, nslots - rslots, gso - refused_gso
        st = self.stats
        if self.limits.data == "map":
            ok, nbytes, nslots, gso = self._map_packets(batch, npkts)
        else:
            self._publish(0, nrsp)
        st.tx_packets += ok
        st.tx_bytes += nbytes
        st.tx_slots += nslots
        st.tx_gso_packets += gso
        if self.limits.data == "copy":
            vec.delivered, vec.delivered_bytes = ok, nbytes
        batch.notify = self._push()
        return batch

    def more(self) -> bool:
        """Requests are still pending (or a fault): process again.  False re-arms the event."""
        return self._fault is not None or self.ring.final_check_for_requests()

    def _cut(self, npkts: int, consumed: int) -> tuple[int, int]:
        """This pass ends before the first packet that starts at or past ``batch_slots``
        entries (it stays on the ring, read again next pass): its answers go out while the
        frontend refills and the rest is copied.  Returns (packets, entries) taken."""
        cut = self.limits.batch_slots
        lo, hi, k = 1, npkts - 1, npkts
        while lo <= hi:  # packets' first entries rise: a binary search
            mid = (lo + hi) // 2
            if TX_PKT.unpack_from(self._pkts, mid * r.TX_PKT.size)[0] >= cut:
                k, hi = mid, mid - 1
            else:
                lo = mid + 1
        if k == npkts:
            return npkts, consumed
        return k, TX_PKT.unpack_from(self._pkts, k * r.TX_PKT.size)[0]

    def _build(self, npkts: int, nreqs: int) -> int:
        """Plan every packet of the batch into the pool, grown first to what the worst case
        of the batch needs (a head and a partial staging frame per packet, a frame per slot)."""
        start = nseg = npiece = 0
        lim = self.limits
        pool = self.pages
        pool.ensure(npkts + 8)  # heads; staging frames are added as the build asks
        while start < npkts:
            end, nseg, npiece = kernels.netback_tx_build(
                self._reqs, self._pkts, start, npkts - start, self.front_domid, lim.copy_len, self._map_frags,
                pool.memory.base_address, pool.pool.buf, self._segs, nseg, SEG_CAP, self._ranges,
                self.vec.pkts, self.vec.pieces, npiece, PIECE_CAP,
            )  # fmt: skip
            if end == npkts:
                break
            if end == start and not pool.ensure(pool.pool.count + 2 * lim.fatal_slots + 2):
                # no memory for the next packet: refuse it, as Linux does when it cannot
                # allocate an skb, and carry on with the rest
                self._refuse(end, npiece, nseg)
                end += 1
            start = end
        self.vec.npieces = npiece
        return nseg

    def _refuse(self, j: int, npiece: int, nseg: int) -> None:
        rec = list(TX_PKT.unpack_from(self._pkts, j * r.TX_PKT.size))
        rec[3] = r.TxError.NO_MEMORY
        TX_PKT.pack_into(self._pkts, j * r.TX_PKT.size, *rec)
        self.vec.set_packet(j, Packet(npiece, 0, 0, 0, j, 0, 0, r.TxError.NO_MEMORY, 0, 0))
        memoryview(self._ranges).cast("I")[2 * j : 2 * j + 2] = memoryview(bytes(8)).cast("I")
        memoryview(self._ranges).cast("I")[2 * j] = nseg

    def _account_exceptions(self, npkts: int) -> None:
        """Refused, failed and multicast packets: counted (and applied) one by one; rare."""
        st = memoryview(self._status).cast("h")
        for j in range(npkts):
            first, nslots, nextras, error, size, _fs, _fl, _gs, _gt, kind, mc, _pad = TX_PKT.unpack_from(
                self._pkts, j * r.TX_PKT.size
            )
            if kind == r.TXK_MCAST_ADD:
                self.stats.mcast_ops += 1
                if len(self.mcast) >= MCAST_MAX and bytes(mc) not in self.mcast:
                    # a full table: refused, as Linux does (the guest cannot grow it without bound)
                    self.stats.tx_errors["mcast_table_full"] += 1
                    self.log.warning(
                        "mcast", "tx: domain %d: multicast table full (%d)", self.front_domid, MCAST_MAX
                    )
                    rr = memoryview(self._rsp_ranges).cast("I")
                    kernels.netback_tx_set_status(self._rsps, rr[2 * j], rr[2 * j + 1], netif.NETIF_RSP_ERROR)
                    continue
                self.mcast.add(bytes(mc))
            elif kind == r.TXK_MCAST_DEL:
                self.mcast.discard(bytes(mc))
                self.stats.mcast_ops += 1
            elif st[j]:
                key = grant_error_key("grant_copy", st[j])
                self.stats.tx_errors[key] += 1
                self.log.warning(key, "tx: domain %d: a grant copy failed: %s", self.front_domid, key)
            elif error:
                name = r.TX_ERROR_NAMES[error]
                self.stats.tx_errors[name] += 1
                self.log.warning(name, "tx: domain %d: packet refused: %s", self.front_domid, name)

    def _check_gso(self, npkts: int) -> tuple[int, int, int]:
        """GSO packets must be TCP over the IP version their type names, headers complete in
        the bytes we pulled (Linux drops a GSO packet whose checksum_setup fails): whatever
        segments them later (a port, the capture) must never meet one it cannot cut.  A packet
        that is not is refused with error responses.  Returns (packets, bytes, slots) refused."""
        vec = self.vec
        mem = self.pages.view
        # the core passes the packets that follow the rule and came with csum_blank: the
        # rest (rare) are judged here, by the rule's one home, check_headers
        n = kernels.gso_check(vec.pkts, vec.pieces, 0, npkts, mem, self._gso_idx)
        if not n:
            return 0, 0, 0
        rr = memoryview(self._rsp_ranges).cast("I")
        refused = nbytes = nslots = 0
        for j in memoryview(self._gso_idx).cast("I")[:n].tolist():
            p = vec.packet(j)
            head = bytearray()
            for pc in vec.iter_pieces(j):
                if pc.domid != DOMID_SELF or pc.flags & r.PIECE_RUN or len(head) >= MAX_HEADER_LEN:
                    break  # a mapped piece is the guest's: headers must be in what we pulled
                base = pc.frame * r.PAGE_SIZE + pc.offset
                head += mem[base : base + min(pc.len, MAX_HEADER_LEN - len(head))]
            try:
                h = check_headers(head, p.len, p.gso_type)
                if not p.flags & r.PKT_CSUM_PARTIAL:
                    self._gso_checksum_fixup(j, h)
                continue
            except GsoError as exc:
                name = r.TX_ERROR_NAMES[r.TxError.BAD_GSO_HEADERS]
                self.stats.tx_errors[name] += 1
                self.log.warning(name, "tx: domain %d: GSO packet refused: %s", self.front_domid, exc)
            kernels.netback_tx_set_status(self._rsps, rr[2 * j], rr[2 * j + 1], netif.NETIF_RSP_ERROR)
            kernels.vec_release(vec.pkts, vec.pieces, j, 1, self.pages.pool.buf, None, vec.tags)
            self.pages.given_back()
            vec.set_packet(j, Packet(p.piece0, 0, 0, 0, j, 0, 0, r.TxError.BAD_GSO_HEADERS, 0, 0))
            refused += 1
            nbytes += p.len
            nslots += TX_PKT.unpack_from(self._pkts, j * r.TX_PKT.size)[1]
        return refused, nbytes, nslots

    def _gso_checksum_fixup(self, j: int, h: Headers) -> None:
        """A GSO packet without ``csum_blank``: made partial; its headers are in the pieces
        we pulled (``check_headers`` saw them whole in our pages)."""
        mem = self.pages.view
        views = []
        for pc in self.vec.iter_pieces(j):
            if pc.domid != DOMID_SELF or pc.flags & r.PIECE_RUN:
                break  # past the pulled headers: as in _check_gso
            views.append(mem[pc.frame * r.PAGE_SIZE + pc.offset :][: pc.len])
        gso_partial_fixup(self.vec, j, h, views)
        self.stats.tx_gso_checksum_fixup += 1

    def _count_csum_failures(self, npkts: int) -> None:
        for j in range(npkts):
            if self.vec.packet(j).flags & r.PKT_CSUM_FAILED:
                self.stats.tx_errors["csum_setup_failed"] += 1

    def _publish(self, first: int, count: int) -> None:
        if self.closed or not count:
            return
        ring = self.ring
        kernels.ring_copy_in(ring.page, ring.rsp_prod_pvt, count, ENTRY, ring.nr_ents,
                             memoryview(self._rsps)[first * ENTRY :])  # fmt: skip
        ring.rsp_prod_pvt = (ring.rsp_prod_pvt + count) & 0xFFFFFFFF

    def _push(self) -> bool:
        notify = self._notify_pending
        self._notify_pending = False
        if not self.closed and self.ring.rsp_prod_pvt != self.ring.rsp_prod:
            notify |= self.ring.push_responses()
        return notify

    def take_notify(self) -> bool:
        """Responses written since the last push (released mapped packets): push them now."""
        return self._push()

    # --- what the caller does with a batch -------------------------------------------------

    def release(self, vec: PacketVec) -> None:
        """The caller is done with ``vec``'s packets: their frames go back to the pool."""
        if vec.npkts:
            kernels.vec_release(vec.pkts, vec.pieces, 0, vec.npkts, self.pages.pool.buf, None, vec.tags)
            self.pages.given_back()
        vec.clear()

    def skbs(self, vec: PacketVec) -> list[Skb]:
        """``vec``'s delivered packets as skbs, which now own their frames (the slow path)."""
        return vec_skbs(vec, lambda pc: self.pages.page(pc.frame), self.pages)

    # --- data=map: the guest's pages, answered when released ---------------------------------

    def _map_packets(self, batch: TxBatch, npkts: int) -> tuple[int, int, int, int]:
        """Map each good packet's slots into an skb; returns (packets, bytes, slots, GSO)."""
        vec = self.vec
        rr = memoryview(self._rsp_ranges).cast("I")
        ok = nbytes = nslots = gso = 0
        for j in range(npkts):
            first, count = rr[2 * j], rr[2 * j + 1]
            p = vec.packet(j)
            if not p.npieces or p.error:
                self._publish(first, count)  # refused now
                continue
            try:
                skb, maps, frames = self._mapped_skb(vec, j)
            except PlatformError as exc:
                key = grant_error_key("map", exc.status)
                self.stats.tx_errors[key] += 1
                self.log.warning(key, "tx: cannot map a slot of domain %d: %s", self.front_domid, exc)
                kernels.netback_tx_set_status(self._rsps, first, count, netif.NETIF_RSP_ERROR)
                kernels.vec_release(vec.pkts, vec.pieces, j, 1, self.pages.pool.buf, None, vec.tags)
                self._publish(first, count)
                continue
            tag = self._next_tag
            self._next_tag += 1
            responses = bytes(self._rsps[first * ENTRY : (first + count) * ENTRY])
            self._mapped[tag] = _Mapped(responses, maps, frames, skb)
            skb.destructor = lambda t=tag: self._release_mapped(t)
            batch.skbs.append(skb)
            ok += 1
            nbytes += p.len
            nslots += TX_PKT.unpack_from(self._pkts, j * r.TX_PKT.size)[1]
            gso += 1 if p.gso_size else 0
        vec.clear()
        return ok, nbytes, nslots, gso

    def _mapped_skb(self, vec: PacketVec, j: int) -> tuple[Skb, list[Mapping], list[int]]:
        p = vec.packet(j)
        pieces = vec.pieces_of(j)
        maps: list[Mapping] = []
        frames = [pc.frame for pc in pieces if pc.domid == DOMID_SELF and not pc.flags & r.PIECE_RUN]
        runs = tuple(
            (Foreign(pc.domid, pc.frame, pc.offset), pc.len) for pc in pieces if pc.flags & r.PIECE_RUN
        )
        bufs: list[Buf] = []
        try:
            for pc in pieces:
                if pc.flags & r.PIECE_RUN:
                    continue
                if pc.domid == DOMID_SELF:
                    page = self.pages.page(pc.frame)
                    if bufs:
                        self.stats.tx_overflow_bytes += pc.len  # past 17 mapped frags: copied
                        bufs.append(Buf(page, pc.offset, pc.len))
                    else:  # the head: our copy, remembering the grants it came from
                        first = runs[0][0] if runs else None
                        bufs.append(Buf(page, pc.offset, pc.len, first, runs if len(runs) > 1 else ()))
                    continue
                m = self.platform.mapper.map(pc.domid, [pc.frame], writable=False)
                maps.append(m)
                foreign = Foreign(pc.domid, pc.frame, pc.offset)
                bufs.append(Buf(Page.outside(m.view), pc.offset, pc.len, foreign))
        except PlatformError:
            for m in maps:
                self.platform.mapper.unmap(m)
            raise
        skb = Skb(bufs[0], bufs[1:])
        set_offloads(skb, p)
        return skb, maps, frames

    @property
    def outstanding(self) -> int:
        """Mapped packets still held somewhere (their slots are unanswered)."""
        return len(self._mapped)

    def _release_mapped(self, tag: int) -> None:
        """The last user of a mapped packet is done: unmap, answer the guest's slots."""
        m = self._mapped.pop(tag, None)
        if m is None:
            return  # unshared at teardown: already unmapped, nobody left to answer
        for mp in m.maps:
            self.platform.mapper.unmap(mp)
        self.pages.pool.give(m.frames)
        self.pages.given_back()
        if self.closed:
            return
        n = len(m.responses) // ENTRY
        self._rsps[: len(m.responses)] = m.responses
        self._publish(0, n)
        self._notify_pending = True

    def teardown(self) -> None:
        """Stop answering, and unshare: mapped packets still queued elsewhere (toward another
        guest) get their bytes copied into our pages, so the guest's grants are unmapped now
        and its disconnect never waits on another guest."""
        self.closed = True
        for tag in list(self._mapped):
            m = self._mapped.pop(tag)
            skb = m.skb
            frags = []
            for buf in skb.frags:
                if buf.foreign is None:
                    frags.append(buf)
                    continue
                page = self.pages.alloc(0)
                page.view[: buf.length] = buf.view
                skb.pages.append(page)
                frags.append(Buf(page, 0, buf.length))
                self.stats.tx_unshared_bytes += buf.length
            skb.frags[:] = frags
            skb.head = Buf(skb.head.page, skb.head.offset, skb.head.length)
            for mp in m.maps:
                self.platform.mapper.unmap(mp)
            skb.pages.extend(self.pages.page(f) for f in m.frames)  # the skb owns our frames now
            skb.source = self.pages
