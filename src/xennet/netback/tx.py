"""netback transmit (guest -> backend).

Each request is copied out of the ring once and only the copy is used (XSA-155).  A packet
is its first slot, the extra-info chain, then data slots while ``more_data``:

* more than ``max_slots`` (18) slots: error responses for the whole packet;
  ``fatal_slots`` (20) or more: the frontend is disconnected as hostile;
* a slot with offset + size > 4096, a bad extra type, a zero GSO size: fatal;
* zero-size slots are answered OKAY and never touched (XSA-448).

The first ``copy_len`` bytes (128, or the whole packet) are grant-copied into the linear
head even when they span several slots (XSA-423/432).  The rest is grant-copied into local
pages (``data="copy"``) or mapped (``data="map"``: the skb's frags are the guest's pages,
tagged with their (domain, grant) so a bridge can forward them by grant copy, seed 003).
Mapped packets are answered when their skb is released.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from ..abi import netif
from ..abi.grant_table import DOMID_SELF, GNTST_NAMES, GNTST_okay
from ..packet.skb import ETH_HLEN, GSO_TCPV4, GSO_TCPV6, MAX_SKB_FRAGS, Buf, Csum, Foreign, Skb
from ..platform.base import PAGE_SIZE, CopyPtr, GrantCopy, Mapping, Page, Platform, PlatformError
from ..ring import BackRing, RingOverflow
from .errors import FatalFrontendError
from .stats import VifStats

log = logging.getLogger(__name__)

BATCH = 64  # packets whose grant copies go in one batch


@dataclass(frozen=True)
class TxLimits:
    max_slots: int = netif.XEN_NETIF_NR_SLOTS_MIN  # more gets error responses
    fatal_slots: int = 20  # this many or more disconnects the frontend (fatal_skb_slots)
    copy_len: int = 128  # bytes pulled into the linear head (XEN_NETBACK_TX_COPY_LEN)
    data: Literal["copy", "map"] = "copy"


@dataclass
class _Slot:
    req: netif.TxRequest
    size: int  # this slot's own data size (the first slot's is derived)


@dataclass
class _Packet:
    first: netif.TxRequest
    slots: list[_Slot]
    extras: dict[int, bytes]
    n_extras: int
    error: str | None = None
    ops: list[GrantCopy] = field(default_factory=list)
    skb: Skb | None = None
    maps: list[Mapping] = field(default_factory=list)
    staged_pages: list[Page] = field(default_factory=list)


class TxQueue:
    def __init__(
        self,
        platform: Platform,
        front_domid: int,
        ring_map: Mapping,
        stats: VifStats,
        limits: TxLimits | None = None,
        pages: Any = None,
    ) -> None:
        self.platform = platform
        self.pages = pages if pages is not None else platform.memory
        self.front_domid = front_domid
        self.ring_map = ring_map
        self.stats = stats
        self.limits = limits or TxLimits()
        self.ring: BackRing[netif.TxRequest, netif.TxResponse] = BackRing(
            ring_map.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        self.mcast: set[bytes] = set()  # addresses the frontend subscribed to (multicast control)
        self._outstanding: dict[int, _Packet] = {}  # mapped packets not yet released
        self.closed = False  # after teardown a late release must not touch the (unmapped) ring
        self._notify_pending = False

    # --- the loop -----------------------------------------------------------------------

    def process(self) -> tuple[list[Skb], bool]:
        """Consume every pending request.  Returns (skbs, notify the frontend?).  The caller
        owns the skbs and must ``release`` each (that answers mapped slots)."""
        out: list[Skb] = []
        try:
            while True:
                batch = self._collect()
                if batch:
                    out.extend(self._run(batch))
                if not batch or len(batch) < BATCH:
                    if not self.ring.final_check_for_requests():
                        break
        except FatalFrontendError:
            for skb in out:  # built before the frontend misbehaved: nobody will take them now
                skb.release()
            raise
        notify = self._push()
        return out, notify

    def _push(self) -> bool:
        notify = self._notify_pending
        self._notify_pending = False
        if self.ring.rsp_prod_pvt != self.ring.rsp_prod:
            notify |= self.ring.push_responses()
        return notify

    def take_notify(self) -> bool:
        """Responses written since the last push (released mapped packets): push them now."""
        return self._push()

    def _collect(self) -> list[_Packet]:
        batch: list[_Packet] = []
        while len(batch) < BATCH:
            try:
                self.ring.check_overflow()
            except RingOverflow as exc:
                raise FatalFrontendError("ring_overflow", f"tx: {exc}") from None
            if not self.ring.unconsumed_requests():
                break
            packet = self._read_packet()
            if packet is None:
                continue  # a control-only request (multicast), already answered
            if packet.error is not None:
                self.stats.tx_errors[packet.error] += 1
                self._respond(packet, netif.NETIF_RSP_ERROR)
                continue
            batch.append(packet)
        return batch

    def _read_packet(self) -> _Packet | None:
        lim = self.limits
        first = self.ring.get_request()  # copied out of shared memory once; only the copy is used
        extras: dict[int, bytes] = {}
        n_extras = 0
        if first.flags & netif.NETTXF_extra_info:
            more = True
            while more:
                if not self.ring.unconsumed_requests():
                    raise FatalFrontendError(
                        "missing_extra_info", "tx: extra info announced but not produced"
                    )
                raw = self.ring.get_request_bytes(netif.NETIF_EXTRA_INFO.size)
                n_extras += 1
                etype = raw[0]
                if not netif.XEN_NETIF_EXTRA_TYPE_NONE < etype < netif.XEN_NETIF_EXTRA_TYPE_MAX:
                    raise FatalFrontendError("bad_extra_type", f"tx: invalid extra type {etype}")
                extras[etype] = raw
                more = bool(raw[1] & netif.XEN_NETIF_EXTRA_FLAG_MORE)
                if n_extras > netif.XEN_NETIF_EXTRA_TYPE_MAX:
                    raise FatalFrontendError("bad_extra_type", "tx: endless extra info chain")
        for etype in (netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD, netif.XEN_NETIF_EXTRA_TYPE_MCAST_DEL):
            if etype in extras:
                addr = extras[etype][2:8]
                (self.mcast.add if etype == netif.XEN_NETIF_EXTRA_TYPE_MCAST_ADD else self.mcast.discard)(
                    addr
                )
                self.stats.mcast_ops += 1
                self.ring.put_response(first.id, netif.NETIF_RSP_OKAY)
                for _ in range(n_extras):
                    self.ring.put_response(0, netif.NETIF_RSP_NULL)
                return None
        packet = _Packet(first, [], extras, n_extras)
        remaining = first.size  # the first slot's size is the packet's; later slots subtract theirs
        flags = first.flags
        count = 1
        while flags & netif.NETTXF_more_data:
            if count >= lim.fatal_slots:
                raise FatalFrontendError("too_many_slots", f"tx: packet uses {count + 1}+ slots")
            if not self.ring.unconsumed_requests():
                raise FatalFrontendError(
                    "truncated_packet", "tx: packet continues past the produced requests"
                )
            req = self.ring.get_request()
            count += 1
            if req.offset + req.size > PAGE_SIZE:
                raise FatalFrontendError(
                    "slot_crosses_page", f"tx: slot offset {req.offset} + size {req.size} crosses the page"
                )
            if count > lim.max_slots and packet.error is None:
                packet.error = "too_many_slots"
            if req.size > remaining and packet.error is None:
                packet.error = "slots_bigger_than_packet"
            remaining -= req.size
            packet.slots.append(_Slot(req, req.size))
            flags = req.flags
        first_size = max(remaining, 0)
        if first.offset + first_size > PAGE_SIZE:
            raise FatalFrontendError(
                "slot_crosses_page",
                f"tx: first slot offset {first.offset} + size {first_size} crosses the page",
            )
        packet.slots.insert(0, _Slot(first, first_size))
        if packet.error is None and first.size < ETH_HLEN:
            packet.error = "runt"
        gso = extras.get(netif.XEN_NETIF_EXTRA_TYPE_GSO)
        if gso is not None:
            g = netif.decode_gso(netif.ExtraInfo(gso[0], gso[1], gso[2:8]))
            if g.size == 0:
                raise FatalFrontendError("gso_size_zero", "tx: GSO size must not be zero")
            if g.type not in (GSO_TCPV4, GSO_TCPV6):
                raise FatalFrontendError("bad_gso_type", f"tx: bad GSO type {g.type}")
        return packet

    # --- building skbs ------------------------------------------------------------------

    def _run(self, batch: list[_Packet]) -> list[Skb]:
        for packet in batch:
            try:
                self._plan(packet)
            except PlatformError as exc:
                packet.error = f"map: {exc}"
        ops = [op for p in batch if p.error is None for op in p.ops]
        status = self.platform.mapper.copy(ops) if ops else []
        self.stats.grant_copy_ops += len(ops)
        self.stats.grant_copy_batches += 1 if ops else 0
        out: list[Skb] = []
        pos = 0
        for packet in batch:
            if packet.error is not None:
                self._discard(packet)
                self.stats.tx_errors[packet.error] += 1
                self._respond(packet, netif.NETIF_RSP_ERROR)
                continue
            mine = status[pos : pos + len(packet.ops)]
            pos += len(packet.ops)
            bad = next((s for s in mine if s != GNTST_okay), None)
            if bad is not None:
                self._discard(packet)
                self.stats.tx_errors[f"grant_copy: {GNTST_NAMES.get(bad, bad)}"] += 1
                self._respond(packet, netif.NETIF_RSP_ERROR)
                continue
            skb = packet.skb
            assert skb is not None
            self._offloads(packet, skb)
            self.stats.tx_packets += 1
            self.stats.tx_bytes += skb.len
            self.stats.tx_slots += len(packet.slots)
            self.stats.tx_gso_packets += 1 if skb.gso_size else 0
            if self.limits.data == "map":
                # the skb names the guest's grants: answer its slots only when it is released
                self._outstanding[id(packet)] = packet
                skb.destructor = lambda p=packet: self._release_mapped(p)
            else:
                self._respond(packet, netif.NETIF_RSP_OKAY)
            out.append(skb)
        return out

    def _plan(self, packet: _Packet) -> None:
        """Allocate the head (and staging pages), map slots, and list the grant copies."""
        lim = self.limits
        mem = self.pages
        total = packet.first.size
        head_len = min(total, lim.copy_len)
        head_page = mem.alloc(0)
        packet.staged_pages.append(head_page)
        frags: list[Buf] = []
        pulled = 0
        head_runs: list[tuple[Foreign, int]] = []
        stage: Page | None = None
        stage_off = 0
        for slot in packet.slots:
            req, size = slot.req, slot.size
            if size == 0:
                continue  # answered OKAY, never dereferenced (XSA-448)
            take = min(size, head_len - pulled)
            if take:
                packet.ops.append(self._copy_op(req.gref, req.offset, head_page, pulled, take))
                head_runs.append((Foreign(self.front_domid, req.gref, req.offset), take))
                pulled += take
            rest, off = size - take, req.offset + take
            if not rest:
                continue
            if lim.data == "map" and len(frags) < MAX_SKB_FRAGS:
                m = self.platform.mapper.map(self.front_domid, [req.gref], writable=False)
                packet.maps.append(m)
                page = Page(-1, 0, m.view)
                frags.append(Buf(page, off, rest, Foreign(self.front_domid, req.gref, off)))
                continue
            # copy mode, or the overflow past 17 mapped frags: pack densely into local pages
            if lim.data == "map":
                self.stats.tx_overflow_bytes += rest
            while rest:
                if stage is None or stage_off == PAGE_SIZE:
                    stage = mem.alloc(0)
                    packet.staged_pages.append(stage)
                    stage_off = 0
                    frags.append(Buf(stage, 0, 0))
                n = min(rest, PAGE_SIZE - stage_off)
                packet.ops.append(self._copy_op(req.gref, off, stage, stage_off, n))
                last = frags[-1]
                frags[-1] = Buf(last.page, last.offset, last.length + n)
                stage_off += n
                off += n
                rest -= n
        # The head is our copy (for headers), but it remembers the grants it came from, so a
        # bridge can forward it by grant copy as well (seed 003).
        if lim.data == "map" and head_runs:
            head = Buf(head_page, 0, pulled, head_runs[0][0], tuple(head_runs) if len(head_runs) > 1 else ())
        else:
            head = Buf(head_page, 0, pulled)  # copy mode answers at once: no grant may be named later
        packet.skb = Skb(head, frags, pages=list(packet.staged_pages), source=mem)
        packet.staged_pages = []

    def _copy_op(self, gref: int, offset: int, dst: Page, dst_off: int, n: int) -> GrantCopy:
        return GrantCopy(
            CopyPtr(gref, self.front_domid, offset), CopyPtr(dst.frame, DOMID_SELF, dst_off, False), n
        )

    def _offloads(self, packet: _Packet, skb: Skb) -> None:
        flags = packet.first.flags
        if flags & netif.NETTXF_csum_blank:
            from ..packet.offload import set_partial_offsets

            skb.csum = Csum.PARTIAL
            if not set_partial_offsets(skb):
                self.stats.tx_errors["csum_setup_failed"] += 1
                skb.csum = Csum.NONE
        elif flags & netif.NETTXF_data_validated:
            skb.csum = Csum.UNNECESSARY
        gso = packet.extras.get(netif.XEN_NETIF_EXTRA_TYPE_GSO)
        if gso is not None:
            g = netif.decode_gso(netif.ExtraInfo(gso[0], gso[1], gso[2:8]))
            skb.gso_size, skb.gso_type = g.size, g.type

    def _discard(self, packet: _Packet) -> None:
        for m in packet.maps:
            self.platform.mapper.unmap(m)
        packet.maps.clear()
        pages = packet.skb.pages if packet.skb is not None else packet.staged_pages
        for page in pages:
            self.pages.free(page)
        pages.clear()
        packet.staged_pages = []
        packet.skb = None

    @property
    def outstanding(self) -> int:
        """Mapped packets still held somewhere (their slots are unanswered)."""
        return len(self._outstanding)

    def _release_mapped(self, packet: _Packet) -> None:
        """The last user of a mapped packet is done: unmap, answer the guest's slots."""
        if self._outstanding.pop(id(packet), None) is None:
            return  # unshared at teardown: already unmapped, nobody left to answer
        for m in packet.maps:
            self.platform.mapper.unmap(m)
        packet.maps.clear()
        if packet.skb is not None:
            for page in packet.skb.pages:
                self.pages.free(page)
            packet.skb.pages.clear()
        self._respond(packet, netif.NETIF_RSP_OKAY)
        self._notify_pending = True

    def _respond(self, packet: _Packet, status: int) -> None:
        if self.closed:
            return
        for i, slot in enumerate(packet.slots):
            self.ring.put_response(slot.req.id, status)
            if i == 0:
                for _ in range(packet.n_extras):
                    self.ring.put_response(0, netif.NETIF_RSP_NULL)
        if not packet.slots:
            self.ring.put_response(packet.first.id, status)
            for _ in range(packet.n_extras):
                self.ring.put_response(0, netif.NETIF_RSP_NULL)

    def teardown(self) -> None:
        """Stop answering, and unshare: mapped packets still queued elsewhere (toward another
        guest) get their bytes copied into our pages, so the guest's grants are unmapped now
        and its disconnect never waits on another guest."""
        self.closed = True
        mem = self.pages
        for packet in list(self._outstanding.values()):
            skb = packet.skb
            if skb is not None:
                frags = []
                for buf in skb.frags:
                    if buf.foreign is None:
                        frags.append(buf)
                        continue
                    page = mem.alloc(0)
                    page.view[: buf.length] = buf.view
                    skb.pages.append(page)
                    frags.append(Buf(page, 0, buf.length))
                    self.stats.tx_unshared_bytes += buf.length
                skb.frags[:] = frags
                skb.head = Buf(skb.head.page, skb.head.offset, skb.head.length)
            for m in packet.maps:
                self.platform.mapper.unmap(m)
            packet.maps.clear()
        self._outstanding.clear()
