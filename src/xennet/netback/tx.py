"""netback transmit (guest -> backend): copy each request out once, validate, grant-copy, respond."""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import netif
from ..abi.grant_table import DOMID_SELF, GNTST_NAMES, GNTST_okay
from ..abi.ring import PAGE_SIZE
from ..platform.base import CopyPtr, GrantCopy, Mapping, Page, Platform
from ..ring import BackRing, RingOverflow
from .errors import FatalFrontendError
from .stats import VifStats

ETH_HLEN = 14
COPY_BATCH = 64  # packets whose grant copies go in one batch


@dataclass(frozen=True)
class TxLimits:
    max_slots: int = netif.XEN_NETIF_NR_SLOTS_MIN  # more gets error responses
    fatal_slots: int = 20  # this many or more disconnects the frontend (fatal_skb_slots)


class TxQueue:
    def __init__(
        self,
        platform: Platform,
        front_domid: int,
        ring_map: Mapping,
        stats: VifStats,
        limits: TxLimits | None = None,
    ) -> None:
        self.platform = platform
        self.front_domid = front_domid
        self.ring_map = ring_map
        self.stats = stats
        self.limits = limits or TxLimits()
        self.ring: BackRing[netif.TxRequest, netif.TxResponse] = BackRing(
            ring_map.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self._buffers: list[Page] = [platform.memory.alloc(0) for _ in range(COPY_BATCH)]

    def process(self) -> tuple[list[bytes], bool]:
        """Consume every pending request.  Returns (frames, notify the frontend?)."""
        frames: list[bytes] = []
        notify = False
        while True:
            batch = self._build_batch()
            if batch:
                frames.extend(self._copy_and_respond(batch))
            if self.ring.rsp_prod_pvt != self.ring.rsp_prod:  # rejected packets have responses too
                notify |= self.ring.push_responses()
            if not batch or len(batch) < COPY_BATCH:
                if not self.ring.final_check_for_requests():
                    break
        return frames, notify

    def _build_batch(self) -> list[tuple[netif.TxRequest, int]]:
        """Up to COPY_BATCH single-slot packets as (request, buffer index); bad ones answered at once."""
        batch: list[tuple[netif.TxRequest, int]] = []
        try:
            self.ring.check_overflow()
        except RingOverflow as exc:
            raise FatalFrontendError("ring_overflow", f"tx: {exc}") from None
        while len(batch) < COPY_BATCH and self.ring.unconsumed_requests():
            req = self.ring.get_request()  # copied out of shared memory once; only the copy is used
            if req.offset + req.size > PAGE_SIZE:
                raise FatalFrontendError(
                    "slot_crosses_page", f"tx: request offset {req.offset} + size {req.size} crosses the page"
                )
            if req.flags & (netif.NETTXF_more_data | netif.NETTXF_extra_info):
                self._reject_chain(req)
                continue
            if req.size < ETH_HLEN:
                self.stats.tx_errors["runt"] += 1
                self.ring.put_response(req.id, netif.NETIF_RSP_ERROR)
                continue
            batch.append((req, len(batch)))
        return batch

    def _reject_chain(self, first: netif.TxRequest) -> None:
        """A multi-slot packet (feature-sg was not negotiated): answer every slot, stay bounded."""
        self.ring.put_response(first.id, netif.NETIF_RSP_ERROR)
        slots = 1
        flags = first.flags
        while flags & (netif.NETTXF_more_data | netif.NETTXF_extra_info):
            if slots >= self.limits.fatal_slots:
                raise FatalFrontendError("too_many_slots", f"tx: packet uses {slots}+ slots")
            if not self.ring.unconsumed_requests():
                raise FatalFrontendError(
                    "truncated_packet", "tx: packet continues past the produced requests"
                )
            if flags & netif.NETTXF_extra_info:
                extra = self.ring.get_request_bytes(netif.NETIF_EXTRA_INFO.size)
                self.ring.put_response(0, netif.NETIF_RSP_NULL)
                more = extra[1] & netif.XEN_NETIF_EXTRA_FLAG_MORE
                flags = (flags & ~netif.NETTXF_extra_info) | (netif.NETTXF_extra_info if more else 0)
            else:
                req = self.ring.get_request()
                self.ring.put_response(req.id, netif.NETIF_RSP_ERROR)
                flags = req.flags
            slots += 1
        self.stats.tx_errors["multislot_without_sg"] += 1

    def _copy_and_respond(self, batch: list[tuple[netif.TxRequest, int]]) -> list[bytes]:
        ops = [
            GrantCopy(
                CopyPtr(req.gref, self.front_domid, req.offset),
                CopyPtr(self._buffers[i].frame, DOMID_SELF, 0, is_gref=False),
                req.size,
            )
            for req, i in batch
        ]
        status = self.platform.mapper.copy(ops)
        self.stats.grant_copy_ops += len(ops)
        self.stats.grant_copy_batches += 1
        frames: list[bytes] = []
        for (req, i), st in zip(batch, status, strict=True):
            if st != GNTST_okay:
                self.stats.tx_errors[f"grant_copy: {GNTST_NAMES.get(st, st)}"] += 1
                self.ring.put_response(req.id, netif.NETIF_RSP_ERROR)
                continue
            frames.append(bytes(self._buffers[i].view[: req.size]))
            self.ring.put_response(req.id, netif.NETIF_RSP_OKAY)
            self.stats.tx_packets += 1
            self.stats.tx_bytes += req.size
        return frames

    def teardown(self) -> None:
        for page in self._buffers:
            self.platform.memory.free(page)
        self._buffers.clear()
