"""netfront receive: keep the rx ring full of granted buffers; turn responses into frames."""

from __future__ import annotations

import logging

from ..abi import netif
from ..abi.ring import PAGE_SIZE
from ..platform.base import Page, Platform
from ..ring import FrontRing
from .stats import NetfrontStats
from .tx import DeviceBroken

log = logging.getLogger(__name__)


class RxQueue:
    def __init__(self, platform: Platform, backend_domid: int, stats: NetfrontStats, fill: int = 256) -> None:
        self.platform = platform
        self.backend_domid = backend_domid
        self.stats = stats
        self.ring_page = platform.memory.alloc(0)
        self.ring_ref = platform.grants.grant_access(backend_domid, self.ring_page.frame, readonly=False)
        self.ring: FrontRing[netif.RxRequest, netif.RxResponse] = FrontRing(
            self.ring_page.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.fill = min(fill, self.ring.nr_ents)
        self._free_ids = list(range(self.ring.nr_ents - 1, -1, -1))
        self._posted: dict[int, tuple[int, Page]] = {}  # id -> (ref, page)
        self._spare: list[Page] = []
        self.held: list[tuple[int, Page]] = []  # answered but still mapped by the backend

    def refill(self) -> bool:
        """Post buffers up to the fill target; True when the backend must be notified."""
        posted = 0
        while len(self._posted) < self.fill and self._free_ids and not self.ring.full():
            page = self._spare.pop() if self._spare else self.platform.memory.alloc(0)
            ref = self.platform.grants.grant_access(self.backend_domid, page.frame, readonly=False)
            req_id = self._free_ids.pop()
            self._posted[req_id] = (ref, page)
            self.ring.put_request(req_id, ref)
            posted += 1
        self.stats.rx_buffers_posted += posted
        return self.ring.push_requests() if posted else False

    def poll(self) -> list[bytes]:
        """Consume responses; returns the frames received (copied out of our buffers)."""
        frames: list[bytes] = []
        while True:
            if self.ring.response_overflow():
                raise DeviceBroken(
                    f"rx: backend produced {self.ring.unconsumed_responses()} responses "
                    f"for {len(self._posted)} posted buffers"
                )
            while self.ring.unconsumed_responses():
                rsp = self.ring.get_response()
                entry = self._posted.pop(rsp.id, None)
                if entry is None:
                    raise DeviceBroken(f"rx: response for id {rsp.id}, which was never posted")
                ref, page = entry
                self._free_ids.append(rsp.id)
                if not self.platform.grants.end_access(ref):
                    self.held.append((ref, page))
                    self.stats.rx_errors["backend_kept_mapping"] += 1
                    log.error("rx: backend still maps grant %d after responding", ref)
                    continue  # the page is the peer's to scribble on: drop it, never reuse
                self._spare.append(page)
                frame = self._check(rsp, page)
                if frame is not None:
                    frames.append(frame)
            if not self.ring.final_check_for_responses():
                break
        return frames

    def _check(self, rsp: netif.RxResponse, page: Page) -> bytes | None:
        if rsp.status < 0:
            self.stats.rx_errors[
                "backend_error" if rsp.status == netif.NETIF_RSP_ERROR else "backend_dropped"
            ] += 1
            return None
        if rsp.status == 0:
            self.stats.rx_errors["empty"] += 1
            return None
        if rsp.offset + rsp.status > PAGE_SIZE:
            self.stats.rx_errors["offset_size_past_page"] += 1
            log.warning("rx: offset %d + size %d crosses the page", rsp.offset, rsp.status)
            return None
        if rsp.flags & (netif.NETRXF_more_data | netif.NETRXF_extra_info):
            # Multi-slot packets need feature-sg / gso, which this queue did not offer.
            self.stats.rx_errors["unnegotiated_multislot"] += 1
            return None
        self.stats.rx_packets += 1
        self.stats.rx_bytes += rsp.status
        return bytes(page.view[rsp.offset : rsp.offset + rsp.status])

    def teardown(self) -> list[tuple[int, Page]]:
        """Like TxQueue.teardown: returns every (ref, page) still to be revoked."""
        held = self.held + list(self._posted.values())
        self.held = []
        self._posted.clear()
        for page in self._spare:
            self.platform.memory.free(page)
        self._spare.clear()
        held.append((self.ring_ref, self.ring_page))
        return held
