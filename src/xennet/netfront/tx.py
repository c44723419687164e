"""netfront transmit: post packets as tx requests (and GSO extras), reap the responses.

Packets wait in a queue (a ``PacketVec``) until the ring has room; ``netfront_tx_post`` puts
as many as fit on the ring in one go, ``netfront_tx_complete`` reaps the answers (the rules
are in ``core/pure/netfront_tx.py``).  Two ways to name the pages:

``grants="pool"``        the pages come from the device's tx pool, granted to the backend
                         once (MirageOS): a packet costs no grant at all;
``grants="per-packet"``  each slot's page is granted when posted and the grant ended when
                         it is answered (Linux): a grant the backend still maps is never
                         reused (XSA-396), it waits in ``revoke``.

``send`` takes skbs (applying what the backend's features demand first: software GSO, a
bounce for a head too close to a page end, the too-many-slots policy); ``send_frames`` takes
frames as bytes straight into pool pages, the fast path.  On every path a packet that asks
for ``csum_blank`` the backend did not offer (``feature-no-csum-offload``, no
``feature-ipv6-csum-offload``) gets its checksum completed here before it is posted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from ..abi import netif
from ..core import kernels
from ..core import records as r
from ..core.types import Buffer
from ..core.vec import PacketVec, Piece, TxState
from ..packet.offload import complete_unoffered
from ..packet.pool import PoolPages, Revoke
from ..packet.skb import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    MAX_SKB_FRAGS,
    PageSource,
    Skb,
    build_skb,
    csum_of,
    csum_state,
    linear_layout,
    page_pieces,
)
from ..packet.skb import (
    Piece as LayoutPiece,
)
from ..platform.base import PAGE_SIZE, Platform
from ..ring import FrontRing
from ..xenbus.ratelog import RateLimitedLog
from .slotpolicy.policies import TooManySlotsPolicy
from .stats import Drop, NetfrontStats

log = logging.getLogger(__name__)

ENTRY = 12
QUEUE_PKTS = 512  # prepared packets waiting for ring space (then the queue stops)
QUEUE_PIECES = 18 * QUEUE_PKTS

Grants = Literal["pool", "per-packet"]


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


class TxQueue:
    def __init__(
        self,
        platform: Platform,
        backend_domid: int,
        stats: NetfrontStats,
        features: TxFeatures | None = None,
        policy: TooManySlotsPolicy | None = None,
        pages: PoolPages | None = None,
        grants: Grants = "pool",
        *,
        bounce_foreign_pages: bool = False,
    ) -> None:
        from .slotpolicy import policy_for

        self.platform = platform
        self.backend_domid = backend_domid
        self.stats = stats
        self.log = RateLimitedLog(log)  # what a backend does wrong, without flooding the log
        self.features = features or TxFeatures()
        self.policy: TooManySlotsPolicy = policy or policy_for("linearize")
        self.grants: Grants = grants
        # an untrusted backend: an skb on any page but our tx pool's is copied into pool
        # frames first, so no other data sharing its pages is ever granted
        self.bounce_foreign_pages = bounce_foreign_pages
        if pages is None:
            pages = PoolPages(
                platform,
                grant_to=backend_domid if grants == "pool" else None,
                readonly=True,
                name="netfront tx",
            )
        self.pages = pages
        self.ring_page = platform.memory.alloc(0)
        self.ring_ref = platform.grants.grant_access(backend_domid, self.ring_page.frame, readonly=False)
        self.ring: FrontRing[netif.TxRequest, netif.TxResponse] = FrontRing(
            self.ring_page.view, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse
        )
        n = self.ring.nr_ents
        self.state = TxState(n)
        self.vec = PacketVec(QUEUE_PKTS, QUEUE_PIECES)
        self.head = 0  # packets before it are on the ring
        self._reqs = bytearray(n * ENTRY)
        self._rsps = bytearray(n * ENTRY)
        self._done = bytearray(n * r.TX_DONE.size)
        self._end = bytearray(n * r.END_REF.size)
        self._skbs: dict[int, Skb] = {}  # tag -> skb in flight (or queued)
        self._own_refs: dict[int, int] = {}  # ref -> tag, for the skbs' per-packet grants
        # skbs the backend still maps a page of: their pages wait with those refs (XSA-396)
        self._kept: dict[int, Revoke] = {}
        self._next_tag = 0
        self.revoke: list[Revoke] = []
        self.stopped = False

    # --- sending ----------------------------------------------------------------

    @property
    def fast(self) -> bool:
        """Frames can go as they are: any frame of a ring's slot limit fits without a policy."""
        return self.features.max_slots >= MAX_SKB_FRAGS

    def send_frame(
        self, frame: bytes | memoryview, *, flags: int = 0, gso_size: int = 0, gso_type: int = 0
    ) -> bool:
        """Copy a frame into fresh pool pages and send it, with the offload state ``flags``
        (PKT_*) and GSO of ``send_frames``."""
        if not frame or len(frame) > netif.XEN_NETIF_MAX_TX_SIZE:
            self.stats.tx_errors["bad_length"] += 1
            return True
        if self.stopped:
            return False
        skb = build_skb(bytes(frame), linear_layout(len(frame)), self.pages)
        skb.csum, skb.gso_size, skb.gso_type = csum_of(flags), gso_size, gso_type if gso_size else GSO_NONE
        return self.send(skb)

    def send_frames(
        self, frames: Buffer, lens: Buffer, n: int, *, flags: int = 0, gso_size: int = 0, gso_type: int = 0
    ) -> int:
        """Send ``n`` frames (back to back, u32 lengths): copied into pool pages in one go and
        posted as far as the ring allows.  Returns how many were taken (sent, queued, or
        dropped and counted); the rest wait for the queue to restart."""
        if self.stopped:
            return 0
        lv = memoryview(lens).cast("B").cast("I")
        # a GSO type the backend did not offer is segmented here: the skb path does that
        if not self.fast or not self.features.sg or (gso_size and not self._takes_gso(gso_type)):
            taken = pos = 0
            for i in range(n):
                frame = memoryview(frames)[pos : pos + lv[i]]
                if not self.send_frame(frame, flags=flags, gso_size=gso_size, gso_type=gso_type):
                    break
                pos += lv[i]
                taken += 1
            return taken
        self._compact()
        room = min(n, self.vec.max_pkts - self.vec.npkts)
        head = lv[:room]
        if min(head, default=1) < 1 or max(head, default=1) > netif.XEN_NETIF_MAX_TX_SIZE:
            room = next(i for i, x in enumerate(head) if not 1 <= x <= netif.XEN_NETIF_MAX_TX_SIZE)
        total = sum(lv[:room])
        if room == 0:
            return self.send_frames_slow(frames, lens, n, flags=flags, gso_size=gso_size, gso_type=gso_type)
        pool = self.pages
        pool.ensure(room + total // PAGE_SIZE + 1)
        first_pkt, first_piece = self.vec.npkts, self.vec.npieces
        done, npieces = kernels.vec_fill_frames(
            pool.view, pool.pool.buf, frames, lens, room, flags, gso_size, gso_type,
            self.vec.pkts, self.vec.pieces,
            self.vec.npkts, self.vec.npieces, self.vec.max_pieces,
        )  # fmt: skip
        self.vec.npkts += done
        self.vec.npieces = npieces
        if self.grants == "per-packet":
            self._grant_pieces(first_piece, npieces)
        self._soft_csum(first_pkt)
        self._drain()
        return int(done)

    def send_frames_slow(
        self, frames: Buffer, lens: Buffer, n: int, *, flags: int = 0, gso_size: int = 0, gso_type: int = 0
    ) -> int:
        lv = memoryview(lens).cast("B").cast("I")
        if n and self.send_frame(
            memoryview(frames)[: lv[0]], flags=flags, gso_size=gso_size, gso_type=gso_type
        ):
            return 1
        return 0

    def _grant_pieces(self, first: int, end: int) -> None:
        """Per-packet grants for the pool pieces ``first..end`` queued just now."""
        pieces = [self.vec.piece(k) for k in range(first, end)]
        refs = self.platform.grants.grant_many(self.backend_domid, [p.frame for p in pieces], readonly=True)
        for k, (p, ref) in enumerate(zip(pieces, refs, strict=True)):
            self.vec.set_piece(first + k, p._replace(ref=ref, flags=p.flags | r.PIECE_OWN_GRANT))

    # --- a port's fast path: frames read straight into pool pages (ports.tap.Producer) ---

    def room(self) -> int:
        """Packets a port may append to ``vec`` now (0 while the queue is stopped)."""
        if self.stopped or not self.fast or not self.features.sg:
            return 0
        self._compact()
        return max(0, min(self.vec.max_pkts - self.vec.npkts, (self.vec.max_pieces - self.vec.npieces) // 18))

    def commit(self, first: int, nbytes: int) -> None:
        """Packets ``first..`` were appended to ``vec`` by a port: grant (per-packet) and post."""
        if self.grants == "per-packet":
            self._grant_pieces(self.vec.packet(first).piece0, self.vec.npieces)
        self._soft_csum(first)
        self._drain()

    def send(self, skb: Skb) -> bool:
        """Take an skb we own (freed once the backend has answered for it).  False, without
        taking it, while the queue is stopped: try again after the next tx event."""
        if self.stopped:
            return False
        for out in self._prepare(skb):
            self._queue_skb(out)
        self._drain()
        return True

    def _queue_skb(self, skb: Skb) -> None:
        pieces: list[Piece] = []
        tag = self._next_tag
        self._next_tag = (self._next_tag + 1) & 0x7FFFFFFF
        pool = self.pages
        for buf in skb.bufs:
            for fi, off, n in page_pieces(buf.offset, buf.length):
                frame = buf.page.frame + fi
                if self.grants == "pool" and buf.page.order == 0 and pool.pool.holds(frame):
                    pieces.append(Piece(frame, off, n, pool.pool.ref(frame)))
                    continue
                ref = self.platform.grants.grant_access(self.backend_domid, frame, readonly=True)
                self._own_refs[ref] = tag
                pieces.append(Piece(frame, off, n, ref, flags=r.PIECE_OWN_GRANT))
        self._compact()
        if not self.vec.room(len(pieces)):
            raise RuntimeError("tx queue full: the caller must respect a stopped queue")
        j = self.vec.append(
            pieces, flags=csum_state(skb.csum), tag=tag, gso_size=skb.gso_size, gso_type=skb.gso_type,
            csum_start=skb.csum_start, csum_offset=skb.csum_offset,
        )  # fmt: skip
        self._skbs[tag] = skb
        self._soft_csum(j)

    def _soft_csum(self, first: int) -> None:
        """Checksums the backend does not offload are completed in our pages before posting."""
        f = self.features
        done, bad = complete_unoffered(self.vec, self.pages.view, first, f.csum_offload, f.ipv6_csum_offload)
        self.stats.tx_soft_csum += done
        if bad:
            self.stats.tx_errors["csum_unparseable"] += bad  # sent as it is: the peer verifies

    def _drain(self) -> None:
        vec, ring = self.vec, self.ring
        if self.head < vec.npkts:
            st = self.state
            end, nreq, nbytes, gso, npk = kernels.netfront_tx_post(
                vec.pkts, vec.pieces, self.head, vec.npkts - self.head, self.pages.pool.buf, st.slots,
                st.inflight, st.ids.buf, st.pkts.buf, ring.free_requests(), self._reqs,
            )  # fmt: skip
            if nreq:
                kernels.ring_copy_in(ring.page, ring.req_prod_pvt, nreq, ENTRY, ring.nr_ents, self._reqs)
                ring.req_prod_pvt = (ring.req_prod_pvt + nreq) & 0xFFFFFFFF
            self.head = end
            s = self.stats
            s.tx_packets += npk
            s.tx_bytes += nbytes
            s.tx_slots += nreq
            s.tx_gso_packets += gso
        # like Linux netfront: what the ring cannot take waits, and the queue stops until
        # completions make room
        backlog = self.head < vec.npkts
        if backlog and not self.stopped:
            self.stats.tx_queue_stopped += 1
        self.stopped = backlog

    def _compact(self) -> None:
        if self.head and (self.head == self.vec.npkts or self.head > self.vec.max_pkts // 2):
            self.vec.compact(self.head)
            self.head = 0

    def flush(self) -> bool:
        """Publish queued requests; True when the backend must be notified."""
        return self.ring.push_requests()

    # --- what the backend's features and the slot limit demand -------------------------

    def _takes_gso(self, gso_type: int) -> bool:
        """Did the backend offer GSO of this type (``feature-gso-tcpv4``, ``-tcpv6``)?"""
        f = self.features
        return (gso_type == GSO_TCPV4 and f.gso_tcpv4) or (gso_type == GSO_TCPV6 and f.gso_tcpv6)

    def _prepare(self, skb: Skb) -> list[Skb]:
        from ..packet import gso as soft_gso
        from .slotpolicy import bounce, needs_bounce

        f = self.features
        mem: PageSource = self.pages
        outs = [skb]
        if skb.gso_size and not self._takes_gso(skb.gso_type):
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
                if self.bounce_foreign_pages and not self._in_pool(out):
                    copy = self._copy_to_pool(out)
                    out.release(mem)  # the copy borrows nothing from it
                    out = copy
                if needs_bounce(out):
                    bounced, copied = bounce(out, mem)
                    self.stats.tx_bounced += 1
                    self.stats.tx_bytes_copied += copied
                    if bounced is not out:
                        _children(out, [bounced], mem)
                    out = bounced
                result.append(out)
        return result

    def _in_pool(self, skb: Skb) -> bool:
        pool = self.pages.pool
        return all(b.page.order == 0 and pool.holds(b.page.frame) for b in skb.bufs)

    def _copy_to_pool(self, skb: Skb) -> Skb:
        """The bytes of ``skb`` in fresh tx pool frames, a frame a buffer, offloads kept."""
        n = skb.len
        layout = tuple(LayoutPiece(0, min(PAGE_SIZE, n - o), 0) for o in range(0, n, PAGE_SIZE))
        out = build_skb(skb.data(), layout, self.pages)
        out.csum, out.csum_start, out.csum_offset = skb.csum, skb.csum_start, skb.csum_offset
        out.gso_size, out.gso_type = skb.gso_size, skb.gso_type
        self.stats.tx_bounced += 1
        self.stats.tx_bytes_copied += n
        return out

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
        """Consume tx responses: end grants, recycle ids and pages, free finished skbs."""
        ring = self.ring
        st = self.state
        done_total = 0
        while True:
            if ring.response_overflow():
                raise DeviceBroken(
                    f"tx: backend produced {ring.unconsumed_responses()} responses "
                    f"for {st.in_flight_ids} outstanding slots"
                )
            n = ring.unconsumed_responses()
            if n:
                kernels.ring_copy_out(ring.page, ring.rsp_cons, n, ENTRY, ring.nr_ents, self._rsps)
                consumed, ndone, nend, ok, err, dropped, fatal, detail, nulls = kernels.netfront_tx_complete(
                    self._rsps, n, self.pages.pool.buf, st.slots, st.inflight, st.ids.buf, st.pkts.buf,
                    self._done, self._end,
                )  # fmt: skip
                ring.rsp_cons = (ring.rsp_cons + consumed) & 0xFFFFFFFF
                done_total += consumed
                s = self.stats
                s.tx_completed += ok
                s.tx_rsp_null += nulls
                if err:
                    s.tx_errors["backend_error"] += err
                if dropped:
                    s.tx_errors["backend_dropped"] += dropped
                if nend:
                    self._end_grants(nend)
                if ndone:
                    self._finish(ndone)
                self.pages.given_back()
                if fatal:
                    raise DeviceBroken(f"tx: response for id {detail}, which is not in flight")
            if not ring.final_check_for_responses(lazy=True):
                break
        if self.head < self.vec.npkts:
            self._drain()
        return done_total

    def _end_grants(self, nend: int) -> None:
        ends = memoryview(self._end).cast("I")
        refs = [int(ends[2 * i]) for i in range(nend)]
        frames = [int(ends[2 * i + 1]) for i in range(nend)]
        kept = set(self.platform.grants.end_many(refs))
        back: list[int] = []
        for ref, frame in zip(refs, frames, strict=True):
            tag = self._own_refs.pop(ref, None)
            if ref in kept:
                # The backend still maps a page it answered for: never recycle it (XSA-396).
                self.stats.tx_errors["backend_kept_mapping"] += 1
                self.log.warning("backend_kept_mapping", "tx: backend still maps answered grant %d", ref)
                if frame != r.NONE32:
                    self.revoke.append(Revoke([ref], [self.pages.page(frame)], self.pages))
                elif tag is not None:
                    self._kept_ref(tag, ref, self.revoke)
            elif frame != r.NONE32:
                back.append(frame)
        if back:
            self.pages.pool.give(back)

    def _finish(self, ndone: int) -> None:
        done = memoryview(self._done).cast("I")
        for i in range(ndone):
            tag = int(done[2 * i])
            skb = self._skbs.pop(tag, None)
            if skb is None:
                continue
            self._keep_pages(tag, skb)
            skb.release(self.pages)

    def _kept_ref(self, tag: int, ref: int, out: list[Revoke]) -> None:
        """The backend still maps ``ref`` of skb ``tag``: the skb's pages will wait with it."""
        rv = self._kept.get(tag)
        if rv is None:
            rv = self._kept[tag] = Revoke([], [])
            out.append(rv)
        rv.refs.append(ref)

    def _keep_pages(self, tag: int, skb: Skb) -> None:
        """A finished skb whose grants the backend still maps: its pages are freed only when
        the last of those refs ends, never before (a refless ``Revoke`` frees at once)."""
        rv = self._kept.pop(tag, None)
        if rv is not None and rv.refs:  # refs left: not all ended by a retry meanwhile
            rv.pages.extend(skb.pages)
            rv.source = skb.source or self.pages
            skb.pages.clear()

    @property
    def in_flight(self) -> int:
        return self.state.in_flight_packets + (self.vec.npkts - self.head)

    def teardown(self) -> list[Revoke]:
        """Free what is ours; returns what the backend may still map, to be revoked later."""
        if self.in_flight:
            self.stats.tx_errors[Drop.UNCONSUMED_AT_CLOSE] += self.in_flight  # never answered
        out = self.revoke
        self.revoke = []
        st = self.state
        pool = self.pages
        grants: list[tuple[int, int]] = []  # (ref, pool frame or NONE32) of every own grant
        back: list[int] = []  # pool frames that are ours again
        for rid in range(st.nr_ents):  # the slots on the ring
            ref, frame, slot, flags = st.slot(rid)
            if slot == r.NONE16:
                continue
            if flags & r.PIECE_OWN_GRANT:
                grants.append((ref, frame if flags & r.PIECE_POOL else r.NONE32))
            elif flags & r.PIECE_POOL:
                back.append(frame)
        for j in range(self.head, self.vec.npkts):  # queued, never posted
            for pc in self.vec.pieces_of(j):
                if pc.flags & r.PIECE_OWN_GRANT:
                    grants.append((pc.ref, pc.frame if pc.flags & r.PIECE_POOL else r.NONE32))
                elif pc.flags & r.PIECE_POOL:
                    back.append(pc.frame)
        kept = set(self.platform.grants.end_many([g for g, _f in grants])) if grants else set()
        for ref, frame in grants:
            if ref not in kept:
                if frame != r.NONE32:
                    back.append(frame)
                continue
            tag = self._own_refs.get(ref)
            if tag is not None and frame == r.NONE32:
                self._kept_ref(tag, ref, out)  # an skb's page: it waits with the grant, below
                continue
            out.append(Revoke([ref], [pool.page(frame)] if frame != r.NONE32 else [], pool))
        pool.pool.give(back)
        for tag, skb in self._skbs.items():
            self._keep_pages(tag, skb)
            skb.release(pool)
        self._skbs.clear()
        self._own_refs.clear()
        self._kept.clear()
        self.vec.clear()
        self.head = 0
        pool.given_back()
        out.append(Revoke([self.ring_ref], [self.ring_page]))
        return out


def _children(parent: Skb, children: list[Skb], mem: PageSource) -> None:
    """Children may reference the parent's pages: release the parent after the last child."""
    if not children:
        parent.release(mem)
        return
    parent.users += len(children) - 1
    for child in children:
        previous = child.destructor

        def done(prev: object = previous) -> None:
            if callable(prev):
                prev()
            parent.release(mem)

        child.destructor = done
