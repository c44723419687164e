"""netback receive (backend -> guest): fill the buffers the guest posted, with grant copies.

Packets wait in a queue (a ``PacketVec``, bounded in bytes: XSA-392).  ``process`` copies the
posted rx requests out of the ring once, plans as many queued packets as fit into them
(``netback_rx_plan``: the packing policy, ``seed`` or ``full``), runs the copies as one
batch, and answers.  Bytes tagged with another guest's (domain, grant) are copied straight
from that grant (seed 003); everything else from our pages.  When the packet at the head
needs more buffers than are posted, the ring's event is re-armed for exactly that many
(``fit-or-wait``); the ``estimate`` admission instead reserves a packet's slots when it is
queued and refuses it if they are not posted (seed 004).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Collection
from itertools import accumulate

from ..abi import netif
from ..core import kernels
from ..core import records as r
from ..core.types import Buffer
from ..core.vec import PacketVec, Piece
from ..packet.offload import complete_unoffered
from ..packet.pool import PoolPages
from ..packet.skb import GSO_TCPV4, GSO_TCPV6, Csum, Skb, build_skb, csum_state, linear_layout, page_pieces
from ..platform.base import PAGE_SIZE, Mapping, Platform, PlatformError
from ..ring import BackRing, RingOverflow
from .errors import FatalFrontendError
from .rxpolicy.admission import admission_policy
from .rxpolicy.packing import packing_policy
from .stats import VifStats, grant_error_key

log = logging.getLogger(__name__)

ENTRY = 8
QUEUE_PKTS = 2048  # packets the queue holds at most (it is bounded in bytes first)
QUEUE_PIECES = 8 * QUEUE_PKTS
SEG_CAP = 2048
_ALL_GSO = frozenset((GSO_TCPV4, GSO_TCPV6))
RSP_CAP = 512


def skb_pieces(skb: Skb) -> list[Piece]:
    """An skb's bytes as vector pieces: one per 4 KiB frame of a local buffer, one per grant
    of a foreign one (seed 003: those are copied from the grant, never read here).  Raises
    ``ValueError`` for bytes no copy may name: a buffer past its compound page, a foreign
    piece leaving its granted page, grants that do not cover their buffer."""
    out: list[Piece] = []
    for i, buf in enumerate(skb.bufs):
        if not buf.length:
            continue
        if buf.foreign is not None or buf.runs:
            covered = 0
            for f, n in buf.foreign_pieces(0, buf.length):
                if f.offset < 0 or f.offset + n > PAGE_SIZE:
                    raise ValueError(
                        f"piece {i}: {n} bytes at grant offset {f.offset} leave its granted page"
                    )
                out.append(Piece(f.gref, f.offset, n, r.NONE32, f.domid, 0))
                covered += n
            if covered != buf.length:
                raise ValueError(f"piece {i}: its grants cover {covered} of its {buf.length} bytes")
            continue
        if not buf.page.in_domain_memory:
            raise ValueError("an skb on pages outside the domain's memory cannot be received")
        if buf.offset < 0 or buf.offset + buf.length > PAGE_SIZE << buf.page.order:
            raise ValueError(f"piece {i}: {buf.length} bytes at {buf.offset} leave its page")
        for fi, off, n in page_pieces(buf.offset, buf.length):
            out.append(Piece(buf.page.frame + fi, off, n))
    return out


class RxQueue:
    def __init__(
        self,
        platform: Platform,
        front_domid: int,
        ring_map: Mapping,
        stats: VifStats,
        max_queued_bytes: int = 1 << 20,
        packing: str = "full",
        admission: str = "fit-or-wait",
        sg: bool = True,
        gso: bool = True,
        stall_timeout_s: float = 10.0,
        pages: PoolPages | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        csum4: bool = True,
        csum6: bool = True,
        gso_types: Collection[int] = _ALL_GSO,
    ) -> None:
        self.platform = platform
        self.pages = pages if pages is not None else PoolPages(platform, name="netback rx")
        self.front_domid = front_domid
        self.ring_map = ring_map
        self.stats = stats
        self.sg = sg  # the frontend takes multi-slot packets
        self.gso = gso  # ... and GSO extra info
        self.gso_types = frozenset(gso_types) if gso else frozenset()  # ... of these types
        # csum_blank only where the frontend takes it (feature-no-csum-offload, -ipv6-):
        # the rest is completed here, as Linux's stack does for a device without the feature
        self.csum4, self.csum6 = csum4, csum6
        self.ring: BackRing[netif.RxRequest, netif.RxResponse] = BackRing(
            ring_map.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.packing = packing_policy(packing)
        # A netfront takes at most XEN_NETIF_NR_SLOTS_MIN data slots per packet; a plan that
        # needs more (the seed packing on frag-heavy layouts) is redone by filling every buffer.
        self.max_buffers = netif.XEN_NETIF_NR_SLOTS_MIN
        self.admission = admission_policy(admission, self.packing)
        self.max_queued_bytes = max_queued_bytes  # XSA-392: a guest that stops reading is bounded
        self.clock = clock
        # XSA-392: a guest that stops posting buffers must not pin our queue (and, in map
        # mode, other guests' grants) forever: after this long without progress, drop it all.
        self.stall_timeout_s = stall_timeout_s
        self._last_progress = clock()
        self.carrier = True
        self.q = PacketVec(QUEUE_PKTS, QUEUE_PIECES)
        self.head = 0  # packets before it are delivered
        self._queued_bytes = 0
        self._skbs: dict[int, Skb] = {}  # tag -> an skb whose bytes are queued
        self._next_tag = 0
        self._estimates: deque[int] = deque()  # estimate admission: reserved slots, in queue order
        n = self.ring.nr_ents
        self._reqs = bytearray(n * ENTRY)
        self._segs = bytearray(SEG_CAP * 24)
        self._plans = bytearray(n * r.RX_PLAN.size)
        self._rsps = bytearray(RSP_CAP * ENTRY)
        self._status = bytearray(2 * n)

    @property
    def queued(self) -> int:
        return self.q.npkts - self.head

    def has_room(self, length: int) -> bool:
        """Would a frame of ``length`` bytes be queued now (for a port that can wait instead)?"""
        return self._queued_bytes + length <= self.max_queued_bytes and self.q.npkts < self.q.max_pkts

    def _refusal(self, length: int, gso_type: int | None) -> str | None:
        """Why a packet of ``length`` bytes (GSO of ``gso_type``, or None) cannot be queued."""
        if not self.sg and length > PAGE_SIZE:
            return "needs_sg"
        if gso_type is not None and gso_type not in self.gso_types:
            return "needs_gso"
        if not self.carrier:
            return "carrier_off"
        if not self.has_room(length):
            return "queue_full"
        return None

    def _admit(self, piece0: int, npieces: int, gso: bool) -> bool:
        """The estimate admission: reserve the packet's slots now, or refuse it."""
        if not self.admission.reserves:
            return True
        est = kernels.netback_rx_estimate(self.q.pieces, piece0, npieces, self.packing.core_id, gso)
        if not self.admission.reserve(est, self.ring.unconsumed_requests()):
            return False
        self._estimates.append(est)
        return True

    def enqueue(self, skb: Skb) -> bool:
        """Take one reference to ``skb``.  False (and the reference released) if dropped."""
        reason = self._refusal(skb.len, skb.gso_type if skb.gso_size else None)
        pieces: list[Piece] = []
        if reason is None and skb.csum is Csum.PARTIAL and not (self.csum4 and self.csum6):
            skb = self._private_copy(skb)  # its checksum is written below: never in a shared skb
        if reason is None:
            try:
                pieces = skb_pieces(skb)
            except ValueError as exc:
                log.warning("rx: domain %d: an skb no copy may carry: %s", self.front_domid, exc)
                reason = "bad_pieces"
        if reason is None and not pieces:
            reason = "empty"
        elif reason is None and not self.q.room(len(pieces)):
            self._compact()
            reason = None if self.q.room(len(pieces)) else "queue_full"
        if reason is None:
            tag = self._next_tag
            self._next_tag = (self._next_tag + 1) & 0x7FFFFFFF
            i = self.q.append(
                pieces, flags=csum_state(skb.csum), tag=tag, gso_size=skb.gso_size, gso_type=skb.gso_type
            )
            if not self._admit(self.q.packet(i).piece0, len(pieces), bool(skb.gso_size)):
                self.q.npkts -= 1
                self.q.npieces -= len(pieces)
                reason = "no_rx_slots"  # estimate admission: the slots it needs are not posted
            else:
                self._skbs[tag] = skb
                self._soft_csum(i)
                self._queued(skb.len)
                return True
        self.stats.rx_dropped[reason] += 1
        skb.release()
        return False

    def enqueue_frames(
        self, frames: Buffer, lens: Buffer, n: int, *, flags: int = 0, gso_size: int = 0, gso_type: int = 0
    ) -> int:
        """Queue ``n`` frames (back to back, u32 lengths), copied into our pool: the fast path
        of a port that has frames as bytes.  Returns how many were taken (queued, or dropped
        and counted); the rest did not fit and may be offered again."""
        lv = memoryview(lens).cast("B").cast("I")
        if (
            not self.carrier
            or self.admission.reserves
            or not self.sg
            or (gso_size and gso_type not in self.gso_types)
        ):
            taken = pos = 0
            for i in range(n):
                length = int(lv[i])
                if not self.has_room(length) and self.carrier:
                    break
                self.enqueue(build_skb(bytes(frames[pos : pos + length]), linear_layout(length), self.pages))
                pos += length
                taken += 1
            return taken
        self._compact()
        limit = min(n, self.q.max_pkts - self.q.npkts)
        sums = list(accumulate(lv[:limit]))
        room = bisect_right(sums, self.max_queued_bytes - self._queued_bytes)
        if not room:
            return 0
        total = sums[room - 1]
        pool = self.pages
        pool.ensure(room + total // PAGE_SIZE + 1)
        done, npieces = kernels.vec_fill_frames(
            pool.view, pool.pool.buf, frames, lens, room, flags, gso_size, gso_type,
            self.q.pkts, self.q.pieces,
            self.q.npkts, self.q.npieces, self.q.max_pieces,
        )  # fmt: skip
        if self.q.npkts == self.head:
            self._last_progress = self.clock()
        first = self.q.npkts
        self.q.npkts += done
        self.q.npieces = npieces
        self._soft_csum(first)
        self._queued_bytes += sums[done - 1] if done else 0
        self.stats.rx_queue_peak = max(self.stats.rx_queue_peak, self.queued)
        return int(done)

    # --- a port's fast path: frames read straight into pool pages (ports.tap.Producer) ---

    @property
    def vec(self) -> PacketVec:
        return self.q

    def room(self) -> int:
        """Packets a port may append to ``vec`` now: none while the carrier is off or the
        queue is full (the port waits; the kernel's socket buffer holds the frames)."""
        if not self.carrier or self.admission.reserves or not self.sg:
            return 0  # those ways need the per-packet checks of ``enqueue``
        self._compact()
        left = self.max_queued_bytes - self._queued_bytes
        if left < 65536:
            return 0
        return max(
            0, min(self.q.max_pkts - self.q.npkts, (self.q.max_pieces - self.q.npieces) // 18, left // 65536)
        )

    def commit(self, first: int, nbytes: int) -> None:
        """Packets ``first..`` were appended by a port: they are queued."""
        if self.gso_types != _ALL_GSO:  # GSO the frontend cannot take: counted, never delivered
            nbytes -= self._refuse_gso(first)
        self._soft_csum(first)
        if first == self.head:
            self._last_progress = self.clock()
        self._queued_bytes += nbytes
        self.stats.rx_queue_peak = max(self.stats.rx_queue_peak, self.queued)

    def _refuse_gso(self, first: int) -> int:
        refused = 0
        for j in range(first, self.q.npkts):
            p = self.q.packet(j)
            if p.gso_size and p.gso_type not in self.gso_types:
                self.stats.rx_dropped["needs_gso"] += 1
                kernels.vec_release(self.q.pkts, self.q.pieces, j, 1, self.pages.pool.buf, None, self.q.tags)
                self.q.set_packet(j, p._replace(npieces=0, len=0, gso_size=0, error=1))
                refused += p.len
        return refused

    def _private_copy(self, skb: Skb) -> Skb:
        """``skb``'s bytes in fresh pages of ours (offloads kept; the caller's reference is
        released): the copy may be written, whoever else holds the original."""
        try:
            copy = build_skb(skb.data(), linear_layout(skb.len), self.pages)
        except PlatformError:
            return skb  # no page: sent as it is; _soft_csum then counts it unparseable
        copy.csum, copy.csum_start, copy.csum_offset = skb.csum, skb.csum_start, skb.csum_offset
        copy.gso_size, copy.gso_type = skb.gso_size, skb.gso_type
        skb.release()
        return copy

    def _soft_csum(self, first: int) -> None:
        """Checksums of packets ``first..`` that the frontend does not offload: completed here."""
        done, bad = complete_unoffered(self.q, self.pages.view, first, self.csum4, self.csum6)
        self.stats.rx_soft_csum += done
        self.stats.rx_csum_unparseable += bad

    def _queued(self, length: int) -> None:
        if self.q.npkts - 1 == self.head:
            self._last_progress = self.clock()
        self._queued_bytes += length
        self.stats.rx_queue_peak = max(self.stats.rx_queue_peak, self.queued)

    def would_take(self, skb: Skb) -> bool:
        """Would ``enqueue`` take this skb now?  (For ports that can wait rather than drop.)"""
        if not self.has_room(skb.len):
            return False
        if self.admission.reserves:
            try:
                pieces = skb_pieces(skb)
            except ValueError:
                return True  # enqueue refuses it (and counts it) now
            tmp = PacketVec(1, max(1, len(pieces)))
            tmp.append(pieces)
            est = kernels.netback_rx_estimate(
                tmp.pieces, 0, len(pieces), self.packing.core_id, bool(skb.gso_size)
            )
            return bool(self.admission.reserved + est <= self.ring.unconsumed_requests())
        return True

    # --- delivery --------------------------------------------------------------------------

    def process(self) -> bool:
        """Deliver queued packets into posted buffers.  Returns: notify the frontend?"""
        notify = False
        self.poll_carrier()
        ring = self.ring
        pool = self.pages
        while self.head < self.q.npkts:
            try:
                ring.check_overflow()
            except RingOverflow as exc:
                raise FatalFrontendError("ring_overflow", f"rx: {exc}") from None
            n = ring.unconsumed_requests()
            if n:
                kernels.ring_copy_out(ring.page, ring.req_cons, n, ENTRY, ring.nr_ents, self._reqs)
            npk, used, nseg, nrsp, needed, staged, forwarded, repacked, planned = kernels.netback_rx_plan(
                self.q.pkts, self.q.pieces, self.head, min(self.q.npkts - self.head, ring.nr_ents),
                self._reqs, n, self.packing.core_id, self.max_buffers, self.front_domid,
                pool.memory.base_address, self._segs, SEG_CAP, self._plans, self._rsps, RSP_CAP,
            )  # fmt: skip
            if npk == 0:
                # Not enough buffers for the packet at the head: ask to be woken when the guest
                # has posted as many as it needs (seed 002: fit, or wait with the event re-armed).
                self.stats.rx_waits += 1
                if self.admission.reserves and self._estimates and needed > self._estimates[0]:
                    self.admission.late_refusals += 1
                if ring.wait_for_requests(max(needed, 1)):
                    continue
                if self.clock() - self._last_progress > self.stall_timeout_s:
                    self._stalled(n, needed)
                break
            if nseg:
                self.platform.mapper.copy_segments(self._segs, nseg)
            ok, bad, nbytes, nslots, gso = kernels.netback_rx_respond(
                self._plans, npk, self._segs, self._rsps, self._status, self.q.pkts, self.head
            )
            kernels.ring_copy_in(ring.page, ring.rsp_prod_pvt, nrsp, ENTRY, ring.nr_ents, self._rsps)
            ring.rsp_prod_pvt = (ring.rsp_prod_pvt + nrsp) & 0xFFFFFFFF
            ring.req_cons = (ring.req_cons + used) & 0xFFFFFFFF
            st = self.stats
            st.grant_copy_ops += nseg
            st.grant_copy_batches += 1 if nseg else 0
            st.rx_packets += ok
            st.rx_bytes += nbytes
            st.rx_slots += nslots
            st.rx_gso_packets += gso
            st.rx_bytes_staged += staged
            st.rx_bytes_forwarded += forwarded
            st.rx_repacked += repacked
            if bad or ok + bad < npk:
                self._count_failures(npk)
            self._queued_bytes -= planned
            self._deliver(npk)
            self._last_progress = self.clock()
            self.carrier = True
            notify |= ring.push_responses()
        self._compact()
        return notify

    def _count_failures(self, npk: int) -> None:
        st = memoryview(self._status).cast("h")
        for j in range(npk):
            p = self.q.packet(self.head + j)
            if st[j]:
                self.stats.rx_dropped[grant_error_key("grant_copy", st[j])] += 1
            elif (not p.npieces or not p.len) and not p.error:
                self.stats.rx_dropped["empty"] += 1

    def _deliver(self, npk: int) -> None:
        """Packets ``head..head+npk`` left the queue: free their frames, release their skbs."""
        q = self.q
        ntags = kernels.vec_release(q.pkts, q.pieces, self.head, npk, self.pages.pool.buf, None, q.tags)
        self.pages.given_back()
        self._release_tags(ntags)
        if self._estimates:
            for _ in range(min(npk, len(self._estimates))):
                self.admission.release(self._estimates.popleft())
        self.head += npk

    def _release_tags(self, ntags: int) -> None:
        if not ntags:
            return
        tags = memoryview(self.q.tags).cast("I")
        for i in range(ntags):
            skb = self._skbs.pop(int(tags[i]), None)
            if skb is not None:
                skb.release()

    def _compact(self) -> None:
        if self.head and (self.head == self.q.npkts or self.head > self.q.max_pkts // 2):
            self.q.compact(self.head)
            self.head = 0

    def _stalled(self, posted: int, needed: int) -> None:
        posted_text = (
            "none are posted" if posted == 0 else f"only {posted} {'is' if posted == 1 else 'are'} posted"
        )
        log.error(
            "rx: guest domain %d stalled: the packet at the head of the queue needs %d rx slots and %s;"
            " nothing delivered for %s (limit %s): dropping %d queued packets, carrier off",
            self.front_domid,
            needed,
            posted_text,
            _duration(self.clock() - self._last_progress),
            _duration(self.stall_timeout_s),
            self.queued,
        )
        self.stats.rx_stalls += 1
        self._drop_all("stalled")
        self.carrier = False  # until the guest posts buffers again (checked in process)

    def _drop_all(self, reason: str) -> None:
        n = self.queued
        if n:
            self.stats.rx_dropped[reason] += n
            ntags = kernels.vec_release(
                self.q.pkts, self.q.pieces, self.head, n, self.pages.pool.buf, None, self.q.tags
            )
            self._release_tags(ntags)
        for est in self._estimates:
            self.admission.release(est)
        self._estimates.clear()
        self.q.clear()
        self.head = 0
        self._queued_bytes = 0

    def poll_carrier(self) -> None:
        """Carrier comes back once the guest has buffers posted again."""
        if not self.carrier and self.ring.unconsumed_requests():
            self.carrier = True
            self._last_progress = self.clock()

    def teardown(self) -> None:
        self._drop_all("disconnected")


def _duration(seconds: float) -> str:
    """A log's duration: milliseconds under a second (a 0.2 s timeout must not read "0 s")."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
