"""netfront transmit: grant each packet's page to the backend, post requests, reap responses."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..abi import netif
from ..abi.ring import PAGE_SIZE
from ..platform.base import Page, Platform
from ..ring import FrontRing
from .stats import NetfrontStats

log = logging.getLogger(__name__)


class DeviceBroken(Exception):
    """The backend did something impossible; the device must stop using the rings."""


@dataclass
class _InFlight:
    ref: int
    page: Page
    length: int


class TxQueue:
    """One tx ring.  ``send`` returns False when the ring is full (the queue is stopped)."""

    def __init__(self, platform: Platform, backend_domid: int, stats: NetfrontStats) -> None:
        self.platform = platform
        self.backend_domid = backend_domid
        self.stats = stats
        self.ring_page = platform.memory.alloc(0)
        self.ring_ref = platform.grants.grant_access(backend_domid, self.ring_page.frame, readonly=False)
        self.ring: FrontRing[netif.TxRequest, netif.TxResponse] = FrontRing(
            self.ring_page.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self._free_ids = list(range(self.ring.nr_ents - 1, -1, -1))
        self._inflight: dict[int, _InFlight] = {}
        self._spare: list[Page] = []  # packet pages whose grant has ended, ready for reuse
        self.held: list[tuple[int, Page]] = []  # answered but still mapped by the backend
        self.stopped = False

    def send(self, frame: bytes | memoryview) -> bool:
        """Queue one frame of at most one page.  The caller pushes with ``flush``."""
        length = len(frame)
        if length == 0 or length > PAGE_SIZE:
            self.stats.tx_errors["bad_length"] += 1
            return True  # consumed (dropped and counted), not a ring-full condition
        if self.ring.full() or not self._free_ids:
            if not self.stopped:
                self.stopped = True
                self.stats.tx_queue_stopped += 1
            return False
        page = self._spare.pop() if self._spare else self.platform.memory.alloc(0)
        page.view[:length] = frame
        ref = self.platform.grants.grant_access(self.backend_domid, page.frame, readonly=True)
        req_id = self._free_ids.pop()
        self._inflight[req_id] = _InFlight(ref, page, length)
        self.ring.put_request(ref, 0, 0, req_id, length)
        self.stats.tx_packets += 1
        self.stats.tx_bytes += length
        return True

    def flush(self) -> bool:
        """Publish queued requests; True when the backend must be notified."""
        return self.ring.push_requests()

    def reap(self) -> int:
        """Consume tx responses: end grants, recycle ids.  Returns responses handled."""
        done = 0
        while True:
            if self.ring.response_overflow():
                raise DeviceBroken(
                    f"tx: backend produced {self.ring.unconsumed_responses()} responses "
                    f"for {len(self._inflight)} requests"
                )
            while self.ring.unconsumed_responses():
                rsp = self.ring.get_response()
                done += 1
                if rsp.status == netif.NETIF_RSP_NULL:
                    continue  # an extra-info slot's response
                slot = self._inflight.pop(rsp.id, None)
                if slot is None:
                    raise DeviceBroken(f"tx: response for id {rsp.id}, which is not in flight")
                if not self.platform.grants.end_access(slot.ref):
                    # The backend still maps a page it answered for: never reuse that page.
                    self.held.append((slot.ref, slot.page))
                    self.stats.tx_errors["backend_kept_mapping"] += 1
                    log.error("tx: backend still maps grant %d after responding", slot.ref)
                else:
                    self._spare.append(slot.page)
                self._free_ids.append(rsp.id)
                if rsp.status == netif.NETIF_RSP_OKAY:
                    self.stats.tx_completed += 1
                elif rsp.status == netif.NETIF_RSP_DROPPED:
                    self.stats.tx_errors["backend_dropped"] += 1
                else:
                    self.stats.tx_errors["backend_error"] += 1
            if not self.ring.final_check_for_responses():
                break
        if done and self.stopped and not self.ring.full():
            self.stopped = False
        return done

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def teardown(self) -> list[tuple[int, Page]]:
        """End every grant and free every page.  Returns the (ref, page) pairs the backend
        still maps: the caller keeps those pages out of use until the peer lets go."""
        held = self.held + [(slot.ref, slot.page) for slot in self._inflight.values()]
        self.held = []
        self._inflight.clear()
        for page in self._spare:
            self.platform.memory.free(page)
        self._spare.clear()
        held.append((self.ring_ref, self.ring_page))
        return held
