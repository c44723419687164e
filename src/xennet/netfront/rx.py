"""netfront receive: keep the rx ring full of granted buffers, assemble the responses into
packets, and validate everything the backend says (``netfront_rx_assemble``: the rules are in
``core/pure/netfront_rx.py``).

Like Linux netfront, the request posted at ring index ``i`` has id ``i & mask``, so the
buffer under an extra-info slot (which carries no id) is known and can be recycled.  A
packet's first 256 bytes are copied into a private head page (the headers are read there,
out of the backend's reach); the rest stays in its rx buffers.  With ``grants="pool"`` the
rx buffers are pool pages granted once; with ``grants="per-packet"`` each is granted when
posted and its grant ended before its bytes are read (Linux).

Received packets come out as a ``PacketVec`` (``poll``); the caller gives it back with
``release`` (the fast path) or turns it into skbs with ``skbs``.
"""

from __future__ import annotations

import logging

from ..abi import netif
from ..core import kernels
from ..core import records as r
from ..core.vec import PacketVec, Piece, RxState
from ..packet.frames import MAX_HEADER_LEN
from ..packet.gso import GsoError, check_headers
from ..packet.offload import gso_partial_fixup
from ..packet.pool import PoolPages, Revoke, vec_skbs
from ..packet.skb import Skb
from ..platform.base import Page, Platform
from ..ring import FrontRing
from ..xenbus.ratelog import RateLimitedLog
from .stats import Drop, NetfrontStats
from .tx import DeviceBroken, Grants

log = logging.getLogger(__name__)

ENTRY = 8
RX_COPY_THRESHOLD = 256  # bytes pulled into the head; the rest stays in the rx pages as frags
PIECE_CAP = 1024


def _fatal_message(code: int, detail: int) -> str:
    messages: dict[int, str] = {
        r.RxFatal.NO_BUFFER_POSTED: f"rx: response in slot {detail}, where no buffer was posted",
        r.RxFatal.ID_NOT_ISSUED: f"rx: response id {detail}: an id never issued in its slot",
        r.RxFatal.EXTRA_NOT_PRODUCED: "rx: extra info announced but never produced",
        r.RxFatal.ENDLESS_EXTRA: "rx: endless extra info chain",
        r.RxFatal.PAST_PRODUCED: "rx: packet continues past the responses produced",
    }
    return messages.get(code, f"rx: {r.RX_FATAL_NAMES.get(code, str(code))}")


class RxQueue:
    def __init__(
        self,
        platform: Platform,
        backend_domid: int,
        stats: NetfrontStats,
        fill: int = 256,
        gso: bool = False,
        pages: PoolPages | None = None,
        heads: PoolPages | None = None,
        grants: Grants = "pool",
    ) -> None:
        self.platform = platform
        self.backend_domid = backend_domid
        self.stats = stats
        self.log = RateLimitedLog(log)  # what a backend does wrong, without flooding the log
        self.gso = gso  # we offered feature-gso-*: the backend may send GSO extra info
        self._gso_idx = bytearray(4 * 256)  # gso_check: the packets to judge here (grown if needed)
        self.grants: Grants = grants
        self.pages = pages or PoolPages(
            platform, grant_to=backend_domid if grants == "pool" else None, name="netfront rx"
        )
        self.heads = heads or PoolPages(platform, name="netfront rx heads")  # never granted
        self.ring_page = platform.memory.alloc(0)
        self.ring_ref = platform.grants.grant_access(backend_domid, self.ring_page.frame, readonly=False)
        self.ring: FrontRing[netif.RxRequest, netif.RxResponse] = FrontRing(
            self.ring_page.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        n = self.ring.nr_ents
        self.fill = min(fill, n)
        self._mask = n - 1
        self.state = RxState(n)
        self.posted = 0
        self._pairs = bytearray(n * r.END_REF.size)
        self._reqs = bytearray(n * ENTRY)
        self._rsps = bytearray(n * ENTRY)
        self._pkts = bytearray(n * r.RX_PKT.size)
        self._recycle = bytearray(2 * n * r.END_REF.size)
        self._refs = bytearray(n * r.END_REF.size)
        self.vec = PacketVec(n, PIECE_CAP)
        self.more = False  # the last poll stopped with responses left
        self.revoke: list[Revoke] = []

    # --- posting buffers -------------------------------------------------------------

    def refill(self) -> bool:
        """Post buffers up to the fill target; True when the backend must be notified."""
        want = min(self.fill - self.posted, self.ring.free_requests())
        if want <= 0:
            return False
        pool = self.pages
        pool.ensure(want)
        if self.grants == "pool":
            got = kernels.pool_take_pairs(pool.pool.buf, want, self._pairs)
        else:
            frames = pool.pool.take(want)
            refs = self.platform.grants.grant_many(self.backend_domid, frames, readonly=False)
            pairs = memoryview(self._pairs).cast("I")
            for i, (ref, frame) in enumerate(zip(refs, frames, strict=True)):
                pairs[2 * i], pairs[2 * i + 1] = ref, frame
            got = len(frames)
        ring = self.ring
        posted = kernels.netfront_rx_post(
            self.state.slots, ring.req_prod_pvt, self._mask, self._pairs, got, self._reqs
        )
        if posted < got:
            self._give_back_pairs(posted, got)  # their slots' buffers are not back yet
        if not posted:
            return False
        kernels.ring_copy_in(ring.page, ring.req_prod_pvt, posted, ENTRY, ring.nr_ents, self._reqs)
        ring.req_prod_pvt = (ring.req_prod_pvt + posted) & 0xFFFFFFFF
        self.posted += posted
        self.stats.rx_buffers_posted += posted
        return ring.push_requests()

    def _give_back_pairs(self, first: int, end: int) -> None:
        pairs = memoryview(self._pairs).cast("I")
        refs = [int(pairs[2 * i]) for i in range(first, end)]
        frames = [int(pairs[2 * i + 1]) for i in range(first, end)]
        self._give_back(refs, frames)

    def _give_back(self, refs: list[int], frames: list[int]) -> None:
        """Buffers that are ours again: a pool keeps its grants; per-packet grants end first."""
        if self.grants == "pool":
            self.pages.pool.give(frames)
            return
        live = [(ref, f) for ref, f in zip(refs, frames, strict=True) if ref != r.NONE32]
        kept = set(self.platform.grants.end_many([ref for ref, _f in live])) if live else set()
        back = [f for ref, f in zip(refs, frames, strict=True) if ref == r.NONE32 or ref not in kept]
        for ref, f in live:
            if ref in kept:
                self.revoke.append(Revoke([ref], [self.pages.page(f)], self.pages))
        self.pages.pool.give(back)

    # --- responses -----------------------------------------------------------------

    def poll(self) -> PacketVec:
        """Consume the complete packets the backend produced: ``vec`` (the caller releases it
        with ``release``, or takes skbs with ``skbs``).  DeviceBroken for an impossible ring."""
        vec = self.vec
        vec.clear()
        ring = self.ring
        self.more = False
        try:
            while True:
                if ring.response_overflow():
                    raise DeviceBroken(
                        f"rx: backend produced {ring.unconsumed_responses()} responses "
                        f"for {self.posted} posted buffers"
                    )
                n = ring.unconsumed_responses()
                if n and vec.npkts < vec.max_pkts:
                    self._batch(n)
                if vec.npkts >= vec.max_pkts:
                    self.more = True  # a full vector: poll again once it is given back
                    break
                if not ring.final_check_for_responses():
                    break
        except DeviceBroken:
            # The packets built before the fault are nobody's: their pages go back now (the
            # slots still posted come back at teardown).
            self.stats.rx_errors[Drop.DEVICE_BROKEN] += vec.delivered
            self.stats.rx_packets -= vec.delivered
            self.stats.rx_bytes -= vec.delivered_bytes
            self.release(vec)
            raise
        return vec

    def _batch(self, n: int) -> None:
        ring = self.ring
        vec = self.vec
        cons = ring.rsp_cons
        kernels.ring_copy_out(ring.page, cons, n, ENTRY, ring.nr_ents, self._rsps)
        room = vec.max_pkts - vec.npkts
        consumed, npkts, fatal, detail = kernels.netfront_rx_assemble(
            self._rsps, n, cons, self._mask, self.state.slots, self.gso, self._pkts, room
        )
        if fatal:
            raise DeviceBroken(_fatal_message(fatal, detail))
        if self.grants == "per-packet" and npkts:
            self._end_data_grants(npkts, cons)
        start = 0
        base = vec.npkts
        while start < npkts:
            self.heads.ensure(npkts - start)
            end, npieces, nrec, ok, nbytes, nslots, gso = kernels.netfront_rx_build(
                self._rsps, self._pkts, start, npkts - start, cons, self._mask, self.state.slots,
                self.pages.view, self.heads.pool.buf, self.grants == "per-packet",
                memoryview(vec.pkts)[base * r.PKT.size :], vec.pieces, vec.npieces, vec.max_pieces,
                self._recycle, 0,
            )  # fmt: skip
            vec.npieces = npieces
            s = self.stats
            s.rx_packets += ok
            s.rx_bytes += nbytes
            vec.delivered += ok
            vec.delivered_bytes += nbytes
            s.rx_slots += nslots
            s.rx_gso_packets += gso
            if nrec:
                rec = memoryview(self._recycle).cast("I")
                self._give_back(
                    [int(rec[2 * i]) for i in range(nrec)], [int(rec[2 * i + 1]) for i in range(nrec)]
                )
            if ok < end - start:
                self._count_errors(base, start, end)
            vec.npkts = base + end  # built: released with the vector, whatever happens next
            if end == start:
                raise DeviceBroken("rx: no head page for a received packet")  # out of memory
            start = end
        self.posted -= consumed  # every response took one posted buffer, whatever became of it
        ring.rsp_cons = (cons + consumed) & 0xFFFFFFFF
        vec.npkts = base + npkts
        if kernels.csum_setup(vec.pkts, vec.pieces, base, npkts, self.pages.view):
            self._csum_failures(base, base + npkts)
        if self.gso:
            self._gso_failures(base, base + npkts)

    def _end_data_grants(self, npkts: int, cons: int) -> None:
        """Per-packet grants: end each good packet's grants (data and extra-info slots) before
        its bytes are read.  A packet with a grant the backend still maps is dropped and
        counted once, as that packet's error (XSA-396); its buffers go back through
        ``_give_back``, which keeps the mapped one aside until the backend lets go."""
        from ..core.pure.codecs import RX_PKT

        slots: list[tuple[int, int, int]] = []  # (packet, slot index, ref)
        for j in range(npkts):
            first, nslots, nextras, error, *_ = RX_PKT.unpack_from(self._pkts, j * r.RX_PKT.size)
            if error:
                continue
            for p in range(first, first + nextras + nslots):
                idx = (cons + p) & self._mask
                slots.append((j, idx, self.state.slot(idx)[1]))
        if not slots:
            return
        kept = set(self.platform.grants.end_many([ref for _j, _i, ref in slots]))
        for j, idx, ref in slots:
            if ref in kept:
                rec = list(RX_PKT.unpack_from(self._pkts, j * r.RX_PKT.size))
                rec[3] = r.RxError.BACKEND_KEPT_MAPPING
                RX_PKT.pack_into(self._pkts, j * r.RX_PKT.size, *rec)
            else:
                self.state.set_slot(idx, self.state.slot(idx)[0], r.NONE32)  # ended: no ref to give back

    def _count_errors(self, base: int, start: int, end: int) -> None:
        from ..core.pure.codecs import RX_PKT

        for j in range(start, end):
            p = self.vec.packet(base + j)
            if p.error:
                reason = r.RX_ERROR_NAMES.get(p.error, str(p.error))
                self.stats.rx_errors[reason] += 1
                _f, nslots, nextras, *_ = RX_PKT.unpack_from(self._pkts, j * r.RX_PKT.size)
                self.stats.rx_slots_dropped += nslots + nextras
                self.log.warning(reason, "rx: dropping a packet: %s", reason)

    def _csum_failures(self, start: int, end: int) -> None:
        for j in range(start, end):
            p = self.vec.packet(j)
            if p.flags & r.PKT_CSUM_FAILED:
                self.stats.rx_errors["csum_blank_unparseable"] += 1
                self.stats.rx_packets -= 1
                self.stats.rx_bytes -= p.len
                self.vec.delivered -= 1
                self.vec.delivered_bytes -= p.len
                self.release_range(j, 1)
                self.vec.set_packet(j, p._replace(npieces=0, error=r.RxError.CSUM_BLANK_UNPARSEABLE))

    def _gso_failures(self, start: int, end: int) -> None:
        """The GSO rule netback applies to a guest's packets, applied to the backend's: a GSO
        packet whose headers GSO cannot cut is dropped here, so no port (TAP, capture) meets
        it; one without ``csum_blank`` is made partial, as Linux's netfront does.  The core
        lists the packets to look at (none in normal traffic); check_headers judges them."""
        vec = self.vec
        if len(self._gso_idx) < 4 * (end - start):
            self._gso_idx = bytearray(4 * (end - start))
        n = kernels.gso_check(vec.pkts, vec.pieces, start, end - start, self.pages.view, self._gso_idx)
        for j in memoryview(self._gso_idx).cast("I")[:n].tolist():
            p = vec.packet(j)
            views: list[memoryview] = []
            have = 0
            for pc in vec.iter_pieces(j):
                views.append(self._page_of(pc).view[pc.offset : pc.offset + pc.len])
                have += pc.len
                if have >= MAX_HEADER_LEN:
                    break
            head = b"".join(bytes(v) for v in views)[:MAX_HEADER_LEN]
            try:
                h = check_headers(head, p.len, p.gso_type)
                if not p.flags & r.PKT_CSUM_PARTIAL:
                    gso_partial_fixup(vec, j, h, views)
                    self.stats.rx_gso_checksum_fixup += 1
                continue
            except GsoError as exc:
                name = r.RX_ERROR_NAMES[r.RxError.BAD_GSO_HEADERS]
                self.stats.rx_errors[name] += 1
                self.log.warning(name, "rx: dropping a GSO packet: %s", exc)
            self.stats.rx_packets -= 1
            self.stats.rx_bytes -= p.len
            self.stats.rx_gso_packets -= 1
            vec.delivered -= 1
            vec.delivered_bytes -= p.len
            self.release_range(j, 1)
            vec.set_packet(j, p._replace(npieces=0, error=r.RxError.BAD_GSO_HEADERS))

    # --- what the caller does with the packets --------------------------------------------

    def release_range(self, start: int, n: int) -> None:
        vec = self.vec
        kernels.vec_release(
            vec.pkts, vec.pieces, start, n, self.pages.pool.buf, self.heads.pool.buf, vec.tags
        )
        self.pages.given_back()
        self.heads.given_back()

    def release(self, vec: PacketVec) -> None:
        """The caller is done with the packets of ``poll``: their pages come back."""
        if vec.npkts:
            self.release_range(0, vec.npkts)
        vec.clear()

    def _page_of(self, pc: Piece) -> Page:
        return (self.heads if pc.flags & r.PIECE_PRIV else self.pages).page(pc.frame)

    def skbs(self, vec: PacketVec) -> list[Skb]:
        """The packets as skbs, which now own their pages (the slow path)."""
        return vec_skbs(vec, self._page_of, _TwoPools(self.pages, self.heads))

    def teardown(self) -> list[Revoke]:
        ring = self.ring
        if not ring.response_overflow() and ring.unconsumed_responses():
            # produced and never read: lost with the connection, counted (in slots)
            self.stats.rx_errors[Drop.UNCONSUMED_AT_CLOSE] += ring.unconsumed_responses()
        out = self.revoke
        self.revoke = []
        refs, frames = [], []
        for rid in range(self.state.nr_ents):
            frame, ref = self.state.slot(rid)
            if frame != r.NONE32:
                refs.append(ref)
                frames.append(frame)
                self.state.set_slot(rid, r.NONE32, 0)
        self.posted = 0
        if self.grants == "pool":
            self.pages.pool.give(frames)  # the pool ends their grants when it closes
        else:
            self._give_back(refs, frames)
            out += self.revoke
            self.revoke = []
        out.append(Revoke([self.ring_ref], [self.ring_page]))
        return out


class _TwoPools:
    """Where a received skb's pages go back: heads to the private pool, buffers to the rx pool."""

    def __init__(self, pages: PoolPages, heads: PoolPages) -> None:
        self.pages = pages
        self.heads = heads

    def alloc(self, order: int = 0) -> Page:
        return self.heads.alloc(order)

    def free(self, page: Page) -> None:
        (self.heads if self.heads.pool.holds(page.frame) else self.pages).free(page)
