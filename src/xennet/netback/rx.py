"""netback receive (backend -> guest): fill the buffers the guest posted, with grant copies."""

from __future__ import annotations

from collections import deque

from ..abi import netif
from ..abi.grant_table import DOMID_SELF, GNTST_NAMES, GNTST_okay
from ..abi.ring import PAGE_SIZE
from ..platform.base import CopyPtr, GrantCopy, Mapping, Page, Platform
from ..ring import BackRing, RingOverflow
from .errors import FatalFrontendError
from .stats import VifStats

COPY_BATCH = 64


class RxQueue:
    def __init__(
        self,
        platform: Platform,
        front_domid: int,
        ring_map: Mapping,
        stats: VifStats,
        max_queued_bytes: int = 1 << 20,
    ) -> None:
        self.platform = platform
        self.front_domid = front_domid
        self.ring_map = ring_map
        self.stats = stats
        self.ring: BackRing[netif.RxRequest, netif.RxResponse] = BackRing(
            ring_map.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.max_queued_bytes = max_queued_bytes  # XSA-392: a guest that stops reading is bounded
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._buffers: list[Page] = [platform.memory.alloc(0) for _ in range(COPY_BATCH)]

    @property
    def queued(self) -> int:
        return len(self._queue)

    def has_room(self, length: int) -> bool:
        """Would a frame of ``length`` bytes be queued now (for a port that can wait instead)?"""
        return self._queued_bytes + length <= self.max_queued_bytes

    def enqueue(self, frame: bytes) -> bool:
        if not frame or len(frame) > PAGE_SIZE:
            self.stats.rx_dropped["needs_multislot"] += 1  # single-slot path: sg not negotiated
            return False
        if self._queued_bytes + len(frame) > self.max_queued_bytes:
            self.stats.rx_dropped["queue_full"] += 1
            return False
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self.stats.rx_queue_peak = max(self.stats.rx_queue_peak, len(self._queue))
        return True

    def process(self) -> bool:
        """Deliver queued frames into posted buffers.  Returns: notify the frontend?"""
        notify = False
        while self._queue:
            try:
                if self.ring.check_overflow() == 0 and not self.ring.final_check_for_requests():
                    break  # no buffers: req_event is armed, the guest's refill will wake us
            except RingOverflow as exc:
                raise FatalFrontendError("ring_overflow", f"rx: {exc}") from None
            n = min(len(self._queue), self.ring.unconsumed_requests(), COPY_BATCH)
            if n == 0:
                break
            reqs = [self.ring.get_request() for _ in range(n)]
            frames = [self._queue.popleft() for _ in range(n)]
            ops = []
            for i, (req, frame) in enumerate(zip(reqs, frames, strict=True)):
                self._queued_bytes -= len(frame)
                self._buffers[i].view[: len(frame)] = frame
                ops.append(
                    GrantCopy(
                        CopyPtr(self._buffers[i].frame, DOMID_SELF, 0, is_gref=False),
                        CopyPtr(req.gref, self.front_domid, 0),
                        len(frame),
                    )
                )
            status = self.platform.mapper.copy(ops)
            self.stats.grant_copy_ops += n
            self.stats.grant_copy_batches += 1
            for req, frame, st in zip(reqs, frames, status, strict=True):
                if st != GNTST_okay:
                    self.stats.rx_dropped[f"grant_copy: {GNTST_NAMES.get(st, st)}"] += 1
                    self.ring.put_response(req.id, 0, 0, netif.NETIF_RSP_ERROR)
                    continue
                self.ring.put_response(req.id, 0, 0, len(frame))
                self.stats.rx_packets += 1
                self.stats.rx_bytes += len(frame)
            notify |= self.ring.push_responses()
        return notify

    def teardown(self) -> None:
        for _ in self._queue:
            self.stats.rx_dropped["disconnected"] += 1
        self._queue.clear()
        self._queued_bytes = 0
        for page in self._buffers:
            self.platform.memory.free(page)
        self._buffers.clear()
