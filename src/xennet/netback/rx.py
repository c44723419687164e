"""netback receive (backend -> guest): fill the buffers the guest posted, with grant copies.

How a packet is spread over buffers is the configured packing policy (``seed`` or
``full``, ``rxpolicy.packing``); when it may go is the admission policy (``estimate`` or
``fit-or-wait``, ``rxpolicy.admission``).  Bytes tagged with another guest's (domain,
grant) are copied straight from that grant (seed 003); everything else from our pages.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from ..abi import netif
from ..abi.grant_table import DOMID_SELF, GNTST_NAMES, GNTST_okay
from ..packet.skb import Csum, Skb
from ..platform.base import PAGE_SIZE, CopyPtr, GrantCopy, Mapping, Platform
from ..ring import BackRing, RingOverflow
from .errors import FatalFrontendError
from .rxpolicy.packing import packing_policy
from .rxpolicy.plan import RxPlan
from .stats import VifStats

log = logging.getLogger(__name__)

BATCH = 64  # packets per grant-copy batch


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
    ) -> None:
        from .rxpolicy.admission import admission_policy

        self.platform = platform
        self.front_domid = front_domid
        self.ring_map = ring_map
        self.stats = stats
        self.sg = sg  # the frontend takes multi-slot packets
        self.gso = gso  # ... and GSO extra info
        self.ring: BackRing[netif.RxRequest, netif.RxResponse] = BackRing(
            ring_map.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.packing = packing_policy(packing)
        # A netfront takes at most XEN_NETIF_NR_SLOTS_MIN data slots per packet; a plan that
        # needs more (the seed packing on frag-heavy layouts) is redone by filling every buffer.
        self.max_buffers = netif.XEN_NETIF_NR_SLOTS_MIN
        self._fallback = packing_policy("full")
        self.admission: Any = admission_policy(admission, self.packing)
        self.max_queued_bytes = max_queued_bytes  # XSA-392: a guest that stops reading is bounded
        self._queue: deque[tuple[Skb, Any]] = deque()  # (skb, the admission's ticket)
        # XSA-392: a guest that stops posting buffers must not pin our queue (and, in map
        # mode, other guests' grants) forever: after this long without progress, drop it all.
        self.stall_timeout_s = stall_timeout_s
        self._last_progress = time.monotonic()
        self.carrier = True
        self._queued_bytes = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def has_room(self, length: int) -> bool:
        """Would a frame of ``length`` bytes be queued now (for a port that can wait instead)?"""
        return self._queued_bytes + length <= self.max_queued_bytes

    def enqueue(self, skb: Skb) -> bool:
        """Take one reference to ``skb``.  False (and the reference released) if dropped."""
        reason = None
        if not self.sg and (skb.len > PAGE_SIZE):
            reason = "needs_sg"
        elif skb.gso_size and not self.gso:
            reason = "needs_gso"
        elif not self.carrier:
            reason = "carrier_off"
        elif not self.has_room(skb.len):
            reason = "queue_full"
        ticket = None
        if reason is None:
            ticket = self.admission.on_queue(skb.layout, bool(skb.gso_size), self.ring.unconsumed_requests())
            if not ticket.go:
                reason = "no_rx_slots"  # estimate admission: the slots it needs are not posted
        if reason is not None:
            self.stats.rx_dropped[reason] += 1
            skb.release()
            return False
        if not self._queue:
            self._last_progress = time.monotonic()
        self._queue.append((skb, ticket))
        self._queued_bytes += skb.len
        self.stats.rx_queue_peak = max(self.stats.rx_queue_peak, len(self._queue))
        return True

    def would_take(self, skb: Skb) -> bool:
        """Would ``enqueue`` take this skb now?  (For ports that can wait rather than drop.)"""
        if not self.has_room(skb.len):
            return False
        if self.admission.reserved:
            need = self.packing.estimate(skb.layout, bool(skb.gso_size))
            return bool(self.admission.reserved + need <= self.ring.unconsumed_requests())
        return True

    def process(self) -> bool:
        """Deliver queued packets into posted buffers.  Returns: notify the frontend?"""
        notify = False
        self.poll_carrier()
        while self._queue:
            try:
                self.ring.check_overflow()
            except RingOverflow as exc:
                raise FatalFrontendError("ring_overflow", f"rx: {exc}") from None
            batch: list[tuple[Skb, RxPlan, list[netif.RxRequest]]] = []
            needed = 0
            while self._queue and len(batch) < BATCH:
                skb, ticket = self._queue[0]
                adm = self.admission.admit(skb.layout, bool(skb.gso_size), self.ring.unconsumed_requests())
                if not adm.go:
                    needed = adm.needed
                    break
                plan = adm.plan
                if plan.nbuffers > self.max_buffers:
                    plan = self._fallback.plan(skb.layout, bool(skb.gso_size))
                    self.stats.rx_repacked += 1
                self._queue.popleft()
                self._queued_bytes -= skb.len
                self.admission.on_done(ticket)
                reqs = [self.ring.get_request() for _ in range(plan.slots)]
                batch.append((skb, plan, reqs))
            if not batch:
                # Not enough buffers for the packet at the head: ask to be woken when the guest
                # has posted as many as it needs (seed 002: fit, or wait with the event re-armed).
                self.stats.rx_waits += 1
                if self.ring.wait_for_requests(max(needed, 1)):
                    continue
                if time.monotonic() - self._last_progress > self.stall_timeout_s:
                    self._stalled()
                break
            self._last_progress = time.monotonic()
            self.carrier = True
            self._copy_and_respond(batch)
            notify |= self.ring.push_responses()
        return notify

    def _copy_and_respond(self, batch: list[tuple[Skb, RxPlan, list[netif.RxRequest]]]) -> None:
        ops: list[GrantCopy] = []
        spans: list[tuple[int, int]] = []
        for skb, plan, reqs in batch:
            start = len(ops)
            bufs = skb.bufs
            for b, chunks in enumerate(plan.buffers):
                dest_req = reqs[plan.slot_of(b)]
                for c in chunks:
                    src = bufs[c.src_index]
                    if src.foreign is not None:
                        # another guest's bytes: copy straight from its grant(s)
                        dst_off = c.dst_offset
                        for f, n in src.foreign_pieces(c.src_offset - src.offset, c.length):
                            ops.append(
                                GrantCopy(
                                    CopyPtr(f.gref, f.domid, f.offset),
                                    CopyPtr(dest_req.gref, self.front_domid, dst_off),
                                    n,
                                )
                            )
                            dst_off += n
                        self.stats.rx_bytes_forwarded += c.length
                        continue
                    frame, off = divmod(c.src_offset, PAGE_SIZE)
                    source = CopyPtr(src.page.frame + frame, DOMID_SELF, off, is_gref=False)
                    self.stats.rx_bytes_staged += c.length
                    ops.append(
                        GrantCopy(source, CopyPtr(dest_req.gref, self.front_domid, c.dst_offset), c.length)
                    )
            spans.append((start, len(ops)))
        status = self.platform.mapper.copy(ops)
        self.stats.grant_copy_ops += len(ops)
        self.stats.grant_copy_batches += 1
        for (skb, plan, reqs), (lo, hi) in zip(batch, spans, strict=True):
            bad = next((s for s in status[lo:hi] if s != GNTST_okay), None)
            if bad is not None:
                self.stats.rx_dropped[f"grant_copy: {GNTST_NAMES.get(bad, bad)}"] += 1
            self._respond(skb, plan, reqs, ok=bad is None)
            skb.release()

    def _respond(self, skb: Skb, plan: RxPlan, reqs: list[netif.RxRequest], ok: bool) -> None:
        flags0 = 0
        if skb.csum is Csum.PARTIAL:
            flags0 |= netif.NETRXF_csum_blank | netif.NETRXF_data_validated
        elif skb.csum is Csum.UNNECESSARY:
            flags0 |= netif.NETRXF_data_validated
        n = plan.nbuffers
        for b in range(n):
            req = reqs[plan.slot_of(b)]
            flags = flags0 if b == 0 else 0
            if b < n - 1:
                flags |= netif.NETRXF_more_data
            if b == 0 and plan.gso:
                flags |= netif.NETRXF_extra_info
            status = plan.sizes[b] if ok else netif.NETIF_RSP_ERROR
            self.ring.put_response(req.id, 0, flags, status)
            if b == 0 and plan.gso:
                # the extra info goes in the slot after the first response (its request is spent)
                self.ring.put_response_bytes(netif.gso_extra(skb.gso_size, skb.gso_type))
        if ok:
            self.stats.rx_packets += 1
            self.stats.rx_bytes += skb.len
            self.stats.rx_slots += plan.slots
            self.stats.rx_gso_packets += 1 if plan.gso else 0

    def _stalled(self) -> None:
        log.error(
            "rx: guest domain %d has not posted buffers for %.0f s: dropping %d queued packets, carrier off",
            self.front_domid,
            self.stall_timeout_s,
            len(self._queue),
        )
        self.stats.rx_stalls += 1
        for skb, ticket in self._queue:
            self.stats.rx_dropped["stalled"] += 1
            self.admission.on_done(ticket)
            skb.release()
        self._queue.clear()
        self._queued_bytes = 0
        self.carrier = False  # until the guest posts buffers again (checked in process)

    def poll_carrier(self) -> None:
        """Carrier comes back once the guest has buffers posted again."""
        if not self.carrier and self.ring.unconsumed_requests():
            self.carrier = True
            self._last_progress = time.monotonic()

    def teardown(self) -> None:
        for skb, ticket in self._queue:
            self.stats.rx_dropped["disconnected"] += 1
            self.admission.on_done(ticket)
            skb.release()
        self._queue.clear()
        self._queued_bytes = 0
