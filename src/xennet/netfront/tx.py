"""netfront transmit: grant every 4 KiB piece of an skb, post its slots (and extra info),
reap responses, free the skb when its last slot is answered.

Before posting, ``_prepare`` applies what the backend's features demand: software GSO for
a type it cannot take, a bounce for a head that starts fewer than 14 bytes before a page
boundary, and the configured too-many-slots policy (``netfront.slotpolicy``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..abi import netif
from ..packet.skb import (
    GSO_TCPV4,
    GSO_TCPV6,
    MAX_SKB_FRAGS,
    Csum,
    Skb,
    build_skb,
    linear_layout,
    page_pieces,
)
from ..platform.base import PAGE_SIZE, Platform
from ..ring import FrontRing
from .revoke import Revoke
from .stats import NetfrontStats

log = logging.getLogger(__name__)


class DeviceBroken(Exception):
    """The backend did something impossible; the device must stop using the rings."""


@dataclass(frozen=True)
class TxFeatures:
    """What the backend agreed to take (negotiated in xenstore)."""

    sg: bool = False
    gso_tcpv4: bool = False
    gso_tcpv6: bool = False
    csum_offload: bool = True
    ipv6_csum_offload: bool = False
    max_slots: int = netif.XEN_NETIF_NR_SLOTS_MIN


@dataclass
class _InFlight:
    skb: Skb
    refs: list[int]
    slots_left: int
    status: int = netif.NETIF_RSP_OKAY
    kept: list[int] = field(default_factory=list)  # refs the backend still mapped when answering


@dataclass
class TxQueue:
    platform: Platform
    backend_domid: int
    stats: NetfrontStats
    features: TxFeatures = field(default_factory=TxFeatures)
    policy: Any = None  # a netfront.slotpolicy.TooManySlotsPolicy; None = the default (linearize)
    pages: Any = None  # where packet pages come from (a PageCache); None = the domain's memory

    def __post_init__(self) -> None:
        if self.pages is None:
            self.pages = self.platform.memory
        if self.policy is None:
            from .slotpolicy import policy_for

            self.policy = policy_for("linearize")
        self.ring_page = self.platform.memory.alloc(0)
        self.ring_ref = self.platform.grants.grant_access(
            self.backend_domid, self.ring_page.frame, readonly=False
        )
        self.ring: FrontRing[netif.TxRequest, netif.TxResponse] = FrontRing(
            self.ring_page.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self._free_ids = list(range(self.ring.nr_ents - 1, -1, -1))
        self._slots: dict[int, _InFlight] = {}  # request id -> its packet
        self._inflight: dict[int, _InFlight] = {}  # id(packet) -> packet
        self._backlog: deque[Skb] = deque()  # prepared skbs waiting for ring space
        self.revoke: list[Revoke] = []
        self.stopped = False

    # --- sending ----------------------------------------------------------------

    def send_frame(self, frame: bytes | memoryview) -> bool:
        """Copy a frame into fresh 4 KiB pages of guest memory and send it."""
        if not frame or len(frame) > netif.XEN_NETIF_MAX_TX_SIZE:
            self.stats.tx_errors["bad_length"] += 1
            return True
        if self.stopped:
            return False
        return self.send(build_skb(bytes(frame), linear_layout(len(frame)), self.pages))

    def send(self, skb: Skb) -> bool:
        """Take an skb we own (freed once the backend has answered for it).  False, without
        taking it, while the queue is stopped: try again after the next tx event."""
        if self.stopped:
            return False
        self._backlog.extend(self._prepare(skb))
        self._drain()
        return True

    def _drain(self) -> None:
        while self._backlog:
            skb = self._backlog[0]
            need = skb.slots() + (1 if skb.gso_size else 0)
            if need > self.ring.free_requests() or need > len(self._free_ids):
                break
            self._backlog.popleft()
            self._post(skb)
        if self._backlog and not self.stopped:
            self.stats.tx_queue_stopped += 1
        self.stopped = bool(self._backlog)

    def _post(self, skb: Skb) -> None:
        length = skb.len
        flags0 = 0
        if skb.csum is Csum.PARTIAL:
            flags0 |= netif.NETTXF_csum_blank | netif.NETTXF_data_validated
        elif skb.csum is Csum.UNNECESSARY:
            flags0 |= netif.NETTXF_data_validated
        if skb.gso_size:
            flags0 |= netif.NETTXF_extra_info
        pieces = [(buf, fi, off, n) for buf in skb.bufs for fi, off, n in page_pieces(buf.offset, buf.length)]
        packet = _InFlight(skb, [], len(pieces))
        self._inflight[id(packet)] = packet
        grants = self.platform.grants
        for i, (buf, frame_index, off, n) in enumerate(pieces):
            ref = grants.grant_access(self.backend_domid, buf.page.frame + frame_index, readonly=True)
            packet.refs.append(ref)
            req_id = self._free_ids.pop()
            self._slots[req_id] = packet
            flags = flags0 if i == 0 else 0
            if i < len(pieces) - 1:
                flags |= netif.NETTXF_more_data
            # the first slot's size is the whole packet; later slots carry their own length
            self.ring.put_request(ref, off, flags, req_id, length if i == 0 else n)
            if i == 0 and skb.gso_size:
                self.ring.put_request_bytes(netif.gso_extra(skb.gso_size, skb.gso_type))
        self.stats.tx_packets += 1
        self.stats.tx_bytes += length
        self.stats.tx_slots += len(pieces) + (1 if skb.gso_size else 0)
        self.stats.tx_gso_packets += 1 if skb.gso_size else 0

    def flush(self) -> bool:
        """Publish queued requests; True when the backend must be notified."""
        return self.ring.push_requests()

    # --- what the backend's features and the slot limit demand -------------------------

    def _prepare(self, skb: Skb) -> list[Skb]:
        from ..packet import gso as soft_gso
        from .slotpolicy import bounce, needs_bounce

        f = self.features
        mem = self.pages
        outs = [skb]
        if skb.gso_size and not (
            (skb.gso_type == GSO_TCPV4 and f.gso_tcpv4) or (skb.gso_type == GSO_TCPV6 and f.gso_tcpv6)
        ):
            outs = soft_gso.segment(skb, skb.gso_size, mem)  # the backend cannot take this GSO type
            self.stats.tx_soft_gso += 1
            _children(skb, outs, mem)
        result: list[Skb] = []
        for orig in outs:
            s: Skb | None = orig
            if not f.sg and (orig.frags or orig.slots() > 1):
                s = self._linearize_small(orig)
            if s is None:
                continue
            fitted = [s]
            if s.slots() > f.max_slots or len(s.frags) > MAX_SKB_FRAGS:
                # the policy first: its output already puts the header in the first slot
                outcome = self.policy.apply(s, f.max_slots, mem)
                self.stats.record_policy(self.policy.name, outcome)
                if outcome.dropped:
                    s.release(mem)
                    continue
                fitted = outcome.skbs
                if not (len(fitted) == 1 and fitted[0] is s):
                    for parent in [s, *(k for k in outcome.keepalive if k is not s)]:
                        _children(parent, fitted, mem)
            for out in fitted:
                if needs_bounce(out):
                    bounced, copied = bounce(out, mem)
                    self.stats.tx_bounced += 1
                    self.stats.tx_bytes_copied += copied
                    if bounced is not out:
                        _children(out, [bounced], mem)
                    out = bounced
                result.append(out)
        return result

    def _linearize_small(self, skb: Skb) -> Skb | None:
        """No scatter-gather: one slot per packet, so at most one page."""
        if skb.len > PAGE_SIZE:
            self.stats.tx_errors["too_big_without_sg"] += 1
            skb.release(self.pages)
            return None
        out = build_skb(skb.data(), linear_layout(skb.len), self.pages)
        out.csum, out.csum_start, out.csum_offset = skb.csum, skb.csum_start, skb.csum_offset
        self.stats.tx_bytes_copied += skb.len
        _children(skb, [out], self.pages)
        return out

    # --- completions ----------------------------------------------------------------

    def reap(self) -> int:
        """Consume tx responses: end grants, recycle ids, free finished skbs."""
        done = 0
        while True:
            if self.ring.response_overflow():
                raise DeviceBroken(
                    f"tx: backend produced {self.ring.unconsumed_responses()} responses "
                    f"for {len(self._slots)} outstanding slots"
                )
            while self.ring.unconsumed_responses():
                rsp = self.ring.get_response()
                done += 1
                if rsp.status == netif.NETIF_RSP_NULL:
                    continue  # an extra-info slot's response
                packet = self._slots.pop(rsp.id, None)
                if packet is None:
                    raise DeviceBroken(f"tx: response for id {rsp.id}, which is not in flight")
                self._free_ids.append(rsp.id)
                if rsp.status != netif.NETIF_RSP_OKAY and packet.status == netif.NETIF_RSP_OKAY:
                    packet.status = rsp.status
                packet.slots_left -= 1
                if packet.slots_left == 0:
                    self._complete(packet)
            if not self.ring.final_check_for_responses():
                break
        if self._backlog:
            self._drain()
        return done

    def _complete(self, packet: _InFlight) -> None:
        del self._inflight[id(packet)]
        if packet.status == netif.NETIF_RSP_OKAY:
            self.stats.tx_completed += 1
        elif packet.status == netif.NETIF_RSP_DROPPED:
            self.stats.tx_errors["backend_dropped"] += 1
        else:
            self.stats.tx_errors["backend_error"] += 1
        kept = [ref for ref in packet.refs if not self.platform.grants.end_access(ref)]
        if kept:
            # The backend still maps pages it answered for: never recycle them (XSA-396).
            self.stats.tx_errors["backend_kept_mapping"] += 1
            log.error("tx: backend still maps grants %s after answering for them", kept)
            self.revoke.append(Revoke(kept, list(packet.skb.pages)))
            packet.skb.pages.clear()
        packet.skb.release(self.pages)

    @property
    def in_flight(self) -> int:
        return len(self._inflight) + len(self._backlog)

    def teardown(self) -> list[Revoke]:
        """Free what is ours; returns what the backend may still map, to be revoked later."""
        out = self.revoke
        self.revoke = []
        for packet in self._inflight.values():
            out.append(Revoke(list(packet.refs), list(packet.skb.pages)))
            packet.skb.pages.clear()
            packet.skb.release(None)
        self._inflight.clear()
        self._slots.clear()
        for skb in self._backlog:
            skb.release(self.pages)
        self._backlog.clear()
        out.append(Revoke([self.ring_ref], [self.ring_page]))
        return out


def _children(parent: Skb, children: list[Skb], mem: Any) -> None:
    """Children may reference the parent's pages: release the parent after the last child."""
    if not children:
        parent.release(mem)
        return
    parent.users += len(children) - 1
    for child in children:
        previous = child.destructor

        def done(prev: Callable[[], None] | None = previous) -> None:
            if prev is not None:
                prev()
            parent.release(mem)

        child.destructor = done
