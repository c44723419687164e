"""netfront receive: keep the rx ring full of granted buffers, assemble multi-slot responses
(and extra info) into skbs, and validate everything the backend says.

Like Linux netfront, the request posted at ring index ``i`` has id ``i & mask``, so the
buffer under an extra-info slot (which carries no id) is known and can be recycled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..abi import netif
from ..packet.skb import GSO_TCPV4, GSO_TCPV6, Buf, Csum, Skb
from ..platform.base import PAGE_SIZE, Page, Platform
from ..ring import FrontRing
from .revoke import Revoke
from .stats import NetfrontStats
from .tx import DeviceBroken

log = logging.getLogger(__name__)

RX_COPY_THRESHOLD = 256  # bytes pulled into the head; the rest stays in the rx pages as frags


class BadPacket(Exception):
    """One received packet is malformed; it is dropped and counted, the device carries on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Posted:
    ref: int
    page: Page


class RxQueue:
    def __init__(
        self,
        platform: Platform,
        backend_domid: int,
        stats: NetfrontStats,
        fill: int = 256,
        gso: bool = False,
        pages: Any = None,
    ) -> None:
        self.platform = platform
        self.pages = pages if pages is not None else platform.memory
        self.backend_domid = backend_domid
        self.stats = stats
        self.gso = gso  # we offered feature-gso-*: the backend may send GSO extra info
        self.ring_page = platform.memory.alloc(0)
        self.ring_ref = platform.grants.grant_access(backend_domid, self.ring_page.frame, readonly=False)
        self.ring: FrontRing[netif.RxRequest, netif.RxResponse] = FrontRing(
            self.ring_page.view, netif.RX_REQUEST, netif.RX_RESPONSE, netif.RxRequest, netif.RxResponse
        )
        self.fill = min(fill, self.ring.nr_ents)
        self._mask = self.ring.nr_ents - 1
        self._posted: dict[int, _Posted] = {}  # id (= ring index & mask) -> buffer
        self._recycle: list[_Posted] = []  # buffers to post again as they are (still granted)
        self.revoke: list[Revoke] = []

    def refill(self) -> bool:
        """Post buffers up to the fill target; True when the backend must be notified."""
        posted = 0
        while len(self._posted) < self.fill and not self.ring.full():
            req_id = self.ring.req_prod_pvt & self._mask
            if req_id in self._posted:
                break  # that slot's buffer has not come back yet
            if self._recycle:
                buf = self._recycle.pop()
            else:
                page = self.pages.alloc(0)
                buf = _Posted(
                    self.platform.grants.grant_access(self.backend_domid, page.frame, readonly=False), page
                )
            self._posted[req_id] = buf
            self.ring.put_request(req_id, buf.ref)
            posted += 1
        self.stats.rx_buffers_posted += posted
        return self.ring.push_requests() if posted else False

    # --- responses -----------------------------------------------------------------

    def poll(self) -> list[Skb]:
        """Consume complete packets; returns their skbs (the caller releases them)."""
        out: list[Skb] = []
        while True:
            if self.ring.response_overflow():
                raise DeviceBroken(
                    f"rx: backend produced {self.ring.unconsumed_responses()} responses "
                    f"for {len(self._posted)} posted buffers"
                )
            while self.ring.unconsumed_responses():
                skb = self._one_packet()
                if skb is not None:
                    out.append(skb)
            if not self.ring.final_check_for_responses():
                break
        return out

    def _take(self) -> tuple[netif.RxResponse, _Posted]:
        idx = self.ring.rsp_cons & self._mask
        rsp = self.ring.get_response()
        buf = self._posted.pop(idx, None)
        if buf is None:
            raise DeviceBroken(f"rx: response in slot {idx}, where no buffer was posted")
        if rsp.id != idx:
            self.revoke.append(Revoke([buf.ref], [buf.page]))  # still ours: freed at teardown
            raise DeviceBroken(f"rx: response id {rsp.id} in slot {idx}: an id never issued there")
        return rsp, buf

    def _take_extra(self) -> bytes:
        idx = self.ring.rsp_cons & self._mask
        raw = self.ring.get_response_bytes(netif.NETIF_EXTRA_INFO.size)
        buf = self._posted.pop(idx, None)
        if buf is None:
            raise DeviceBroken(f"rx: extra info in slot {idx}, where no buffer was posted")
        self._recycle.append(buf)  # untouched by the backend: post it again
        return raw

    def _one_packet(self) -> Skb | None:
        """Consume every slot of one packet, then validate.  A bad packet is dropped whole."""
        first, first_buf = self._take()
        slots: list[tuple[netif.RxResponse, _Posted]] = [(first, first_buf)]
        extras: list[bytes] = []
        bad: str | None = None
        flags = first.flags
        if flags & netif.NETRXF_extra_info:
            more = True
            while more:
                if not self.ring.unconsumed_responses():
                    raise DeviceBroken("rx: extra info announced but never produced")
                raw = self._take_extra()
                extras.append(raw)
                more = bool(raw[1] & netif.XEN_NETIF_EXTRA_FLAG_MORE)
                if len(extras) > netif.XEN_NETIF_EXTRA_TYPE_MAX:
                    raise DeviceBroken("rx: endless extra info chain")
        rsp = first
        max_slots = netif.XEN_NETIF_NR_SLOTS_MIN + (1 if 0 <= first.status <= RX_COPY_THRESHOLD else 0)
        while rsp.flags & netif.NETRXF_more_data:
            if not self.ring.unconsumed_responses():
                raise DeviceBroken("rx: packet continues past the responses produced")
            rsp, buf = self._take()
            slots.append((rsp, buf))
            if len(slots) > max_slots and bad is None:
                bad = "too_many_slots"
        try:
            if bad is not None:
                raise BadPacket(bad)
            skb = self._assemble(slots, extras)
        except BadPacket as exc:
            self.stats.rx_errors[exc.reason] += 1
            log.warning("rx: dropping a packet: %s", exc.reason)
            for _rsp, buf in slots:
                self._give_back(buf)
            return None
        return skb

    def _give_back(self, buf: _Posted) -> None:
        if self.platform.grants.end_access(buf.ref):
            self.pages.free(buf.page)
        else:
            self.stats.rx_errors["backend_kept_mapping"] += 1
            self.revoke.append(Revoke([buf.ref], [buf.page]))

    def _assemble(self, slots: list[tuple[netif.RxResponse, _Posted]], extras: list[bytes]) -> Skb:
        for rsp, _buf in slots:
            if rsp.status < 0:
                raise BadPacket("backend_error" if rsp.status == netif.NETIF_RSP_ERROR else "backend_dropped")
            if rsp.offset + rsp.status > PAGE_SIZE:
                raise BadPacket("offset_size_past_page")
        if slots[0][0].status == 0:
            raise BadPacket("empty_first_slot")
        gso_size, gso_type = 0, 0
        for raw in extras:
            etype = raw[0]
            if not netif.XEN_NETIF_EXTRA_TYPE_NONE < etype < netif.XEN_NETIF_EXTRA_TYPE_MAX:
                raise BadPacket("bad_extra_type")
            if etype == netif.XEN_NETIF_EXTRA_TYPE_GSO:
                g = netif.decode_gso(netif.ExtraInfo(raw[0], raw[1], raw[2:8]))
                if not self.gso:
                    raise BadPacket("unnegotiated_gso")
                if g.size == 0:
                    raise BadPacket("gso_size_zero")
                if g.type not in (GSO_TCPV4, GSO_TCPV6):
                    raise BadPacket("bad_gso_type")
                gso_size, gso_type = g.size, g.type
        # From here the packet is good: end the grants, take the pages into the skb.
        pages: list[Page] = []
        bufs: list[Buf] = []
        for rsp, posted in slots:
            if not self.platform.grants.end_access(posted.ref):
                self.stats.rx_errors["backend_kept_mapping"] += 1
                self.revoke.append(Revoke([posted.ref], [posted.page]))
                for page in pages:
                    self.pages.free(page)
                raise BadPacket("backend_kept_mapping")
            pages.append(posted.page)
            if rsp.status:
                bufs.append(Buf(posted.page, rsp.offset, rsp.status))
        skb = _pull_head(bufs, pages, self.pages)
        skb.gso_size, skb.gso_type = gso_size, gso_type
        flags = slots[0][0].flags
        if flags & netif.NETRXF_csum_blank:
            skb.csum = Csum.PARTIAL
            from ..packet.offload import set_partial_offsets

            if not set_partial_offsets(skb):
                skb.release(self.pages)
                raise BadPacket("csum_blank_unparseable")
        elif flags & netif.NETRXF_data_validated:
            skb.csum = Csum.UNNECESSARY
        self.stats.rx_packets += 1
        self.stats.rx_bytes += skb.len
        self.stats.rx_slots += len(slots) + len(extras)
        self.stats.rx_gso_packets += 1 if skb.gso_size else 0
        return skb

    def teardown(self) -> list[Revoke]:
        out = self.revoke
        self.revoke = []
        for buf in [*self._posted.values(), *self._recycle]:
            out.append(Revoke([buf.ref], [buf.page]))
        self._posted.clear()
        self._recycle.clear()
        out.append(Revoke([self.ring_ref], [self.ring_page]))
        return out


def _pull_head(bufs: list[Buf], pages: list[Page], source: Any) -> Skb:
    """Copy up to RX_COPY_THRESHOLD bytes into a fresh head page; the rest stay as frags."""
    head_page = source.alloc(0)
    want = min(RX_COPY_THRESHOLD, sum(b.length for b in bufs))
    pos = 0
    frags: list[Buf] = []
    for b in bufs:
        take = min(b.length, want - pos)
        if take:
            head_page.view[pos : pos + take] = b.view[:take]
            pos += take
        if b.length > take:
            frags.append(Buf(b.page, b.offset + take, b.length - take))
    return Skb(Buf(head_page, 0, want), frags, pages=[head_page, *pages], source=source)
