"""A netfront vif: the xenbus handshake driving one tx and one rx queue.

Events in (``on_watch``, ``on_event``, ``send``), frames and notify decisions out.
The xenstore client and platform are handed in; the run loop that waits on their
file descriptors lives in ``xennet.world``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

from ..core.types import Buffer
from ..core.vec import PacketVec
from ..packet.pool import PoolPages, Revoke
from ..packet.skb import PageSource, Skb
from ..platform.base import PeerGone, Platform, PlatformError
from ..xenbus.device import HandshakeError, XenbusDevice
from ..xenbus.handshake import Event, Runner
from ..xenbus.paths import VifPaths
from ..xenbus.states import XenbusState
from ..xenstore.client import Transaction, XenstoreClient, XenstoreConnectionError, XenstoreError
from .handshake import TABLE, Action
from .rx import RxQueue
from .stats import NetfrontStats
from .tx import DeviceBroken, Grants, TxFeatures, TxQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetfrontConfig:
    split_event_channels: bool = True  # used when the backend offers them
    rx_fill: int = 256
    sg: bool = True  # offer/use scatter-gather (multi-slot packets)
    gso: bool = True  # offer/use TCPv4/TCPv6 GSO
    csum_offload: bool = True  # False writes feature-no-csum-offload
    slot_policy: str = "linearize"  # drop | linearize | segment | relayout
    max_slots: int = 18  # slots per packet the backend takes (XEN_NETIF_NR_SLOTS_MIN)
    grants: Grants = "pool"  # pool: pages granted once per connection; per-packet: Linux's way
    pool_frames: int = 2048  # frames each of the tx and rx pools may hold
    # Linux's xen_netfront.trusted: False treats every backend as untrusted.  A backend is
    # also untrusted when the toolstack wrote trusted=0 in our directory (libxl does); then
    # no page but our own tx pool's is ever granted to it (XSA-403's bounce)
    trust_backend: bool = True
    # merge in-order TCP segments of one batch into one frame for the guest's stack, as Linux
    # netfront's napi_gro_receive does (packet.gro); the guest's TCP then ACKs once per frame
    gro: bool = True

    def __post_init__(self) -> None:
        from .slotpolicy import policy_names

        if self.slot_policy not in policy_names():
            raise ValueError(f"slot policy {self.slot_policy!r}: choose one of {', '.join(policy_names())}")
        if self.grants not in get_args(Grants):
            raise ValueError(f"grants={self.grants!r}: choose one of {', '.join(get_args(Grants))}")
        if not 1 <= self.rx_fill <= 256:
            raise ValueError(f"rx_fill {self.rx_fill}: 1..256")
        if not 1 <= self.max_slots <= 64:
            raise ValueError(f"max_slots {self.max_slots}: 1..64")
        if self.pool_frames < 512:
            raise ValueError(f"pool_frames {self.pool_frames}: at least 512 (a ring's worth each way)")


class Netfront:
    def __init__(
        self, platform: Platform, xs: XenstoreClient, nodename: str, config: NetfrontConfig | None = None
    ) -> None:
        self.platform = platform
        self.xs = xs
        self.config = config or NetfrontConfig()
        self.dev = XenbusDevice(xs, nodename)
        self.stats = NetfrontStats()
        self.backend_domid = -1
        self.tx: TxQueue | None = None
        self.rx: RxQueue | None = None
        self.tx_port = self.rx_port = -1
        self.features = TxFeatures()
        self.pages: PoolPages | None = None  # tx pool: where skbs to send are built
        self._pools: list[PoolPages] = []
        self._closed_pools: list[PoolPages] = []  # closed, with frames the stack still holds
        self.backend_connected = False
        self.broken = False
        self._revoke: list[Revoke] = []  # grants the backend still maps (XSA-396)
        self._token = f"netfront:{nodename}"
        self._watching: list[str] = []
        self._handshake = Runner(
            nodename,
            TABLE,
            self.dev,
            self._perform,
            self._refused,
            (HandshakeError, XenstoreError, PlatformError),
        )

    @classmethod
    def for_vif(
        cls, platform: Platform, xs: XenstoreClient, paths: VifPaths, config: NetfrontConfig | None = None
    ) -> Netfront:
        return cls(platform, xs, paths.frontend, config)

    # --- xenbus -------------------------------------------------------------

    def start(self) -> None:
        """Find the backend our toolstack named and watch its state (probe).  Also our own
        ``state``: it vanishing is how a toolstack detach reaches us."""
        backend = self.dev.read("backend")
        backend_id = self.dev.read("backend-id")
        if not backend or backend_id is None or not backend_id.strip().isdigit():
            raise HandshakeError(f"{self.dev.nodename}: no usable backend/backend-id")
        self.dev.otherend = backend.strip()
        self.backend_domid = int(backend_id)
        self.dev.adopt_state(XenbusState.parse(self.dev.read("state")))
        if self.dev.state != XenbusState.Initialising:
            self.dev.switch_state(XenbusState.Initialising)
        self._watching = [f"{self.dev.otherend}/state", f"{self.dev.nodename}/state"]
        for path in self._watching:
            self.xs.watch(path, self._token)  # fires once now: handled in on_watch

    def on_watch(self, path: str, token: str) -> None:
        if token != self._token:
            return
        try:
            if self._revoke:
                self.retry_revoke()
            if path == f"{self.dev.nodename}/state" and self.dev.gone():
                if self.dev.state != XenbusState.Closed or self.tx is not None:
                    log.error(
                        "%s: our directory is gone (toolstack detach): cannot record our state; "
                        "tearing down anyway",
                        self.dev.nodename,
                    )
                self._handshake.handle(Event.DETACHED)
                return
            if path != f"{self.dev.otherend}/state":
                # our own state changed (we wrote it): that is no news of the backend.  Taking
                # it as news would retry a backend that just failed us at once, forever.
                return
            event = self.dev.peer_event()
        except (XenstoreError, PlatformError) as exc:
            self._fail(f"handshake: {exc}")
            return
        message = f"backend is gone: {self.dev.otherend} vanished from xenstore"
        if event == Event.PEER_UNKNOWN:
            message = f"backend {self.dev.otherend} says state Unknown under a connection"
        self._handshake.handle(event, message)

    def _perform(self, action: enum.Enum, message: str, _reason: str) -> None:
        """One effect of a handshake transition (the table is in ``handshake.py``)."""
        if action == Action.CONNECT:
            self._connect()
        elif action == Action.PEER_CONNECTED:
            self.backend_connected = True
        elif action == Action.TEARDOWN:
            self._teardown()
        elif action == Action.RECORD_ERROR:
            self.broken = True
            self.dev.record_error(message)
        elif action == Action.FOLLOW_PEER:
            self._handshake.handle(self.dev.peer_event(), f"backend is gone: {self.dev.otherend} vanished")
        elif action == Action.STOP_WATCHING:
            self.stop_watching()

    def _connect(self) -> None:
        from .slotpolicy import policy_for

        c = self.config
        d = self.dev
        self.broken = False  # a new connection: whatever broke the last one is gone with it
        if d.read_other("feature-rx-copy") != "1":
            raise HandshakeError("backend does not offer feature-rx-copy; flipping is not supported")
        split = c.split_event_channels and d.other_feature("feature-split-event-channels")
        # csum_blank only for what the backend offered; GSO of an IP version only with its
        # checksum offload (Linux drops TSO/TSO6 without IP/IPv6 csum)
        csum4 = not d.other_feature("feature-no-csum-offload")
        csum6 = d.other_feature("feature-ipv6-csum-offload")
        features = TxFeatures(
            sg=c.sg and d.other_feature("feature-sg"),
            gso_tcpv4=c.gso and c.sg and csum4 and d.other_feature("feature-gso-tcpv4"),
            gso_tcpv6=c.gso and c.sg and csum6 and d.other_feature("feature-gso-tcpv6"),
            csum_offload=csum4,
            ipv6_csum_offload=csum6,
            max_slots=c.max_slots,
        )
        self.features = features
        pool = c.grants == "pool"
        peer = self.backend_domid if pool else None
        name = self.dev.nodename
        tx_pages = PoolPages(
            self.platform, grant_to=peer, readonly=True, limit=c.pool_frames, name=f"{name} tx"
        )
        rx_pages = PoolPages(self.platform, grant_to=peer, limit=c.pool_frames, name=f"{name} rx")
        heads = PoolPages(self.platform, limit=c.pool_frames, name=f"{name} rx heads")
        self._pools = [tx_pages, rx_pages, heads]
        self.pages = tx_pages
        self.tx = TxQueue(
            self.platform,
            self.backend_domid,
            self.stats,
            features,
            policy_for(c.slot_policy),
            tx_pages,
            c.grants,
            bounce_foreign_pages=not c.trust_backend or d.read("trusted") == "0",
        )
        self.rx = RxQueue(
            self.platform,
            self.backend_domid,
            self.stats,
            c.rx_fill,
            gso=c.gso and c.sg,
            pages=rx_pages,
            heads=heads,
            grants=c.grants,
        )
        ev = self.platform.evtchn
        self.tx_port = ev.alloc_unbound(self.backend_domid)
        self.rx_port = ev.alloc_unbound(self.backend_domid) if split else self.tx_port
        node = d.nodename
        tx_ref, rx_ref = self.tx.ring_ref, self.rx.ring_ref

        def publish(t: Transaction) -> None:
            t.write(f"{node}/tx-ring-ref", str(tx_ref))
            t.write(f"{node}/rx-ring-ref", str(rx_ref))
            if split:
                t.write(f"{node}/event-channel-tx", str(self.tx_port))
                t.write(f"{node}/event-channel-rx", str(self.rx_port))
            else:
                t.write(f"{node}/event-channel", str(self.tx_port))
            t.write(f"{node}/request-rx-copy", "1")
            t.write(f"{node}/feature-rx-notify", "1")
            t.write(f"{node}/feature-sg", "1" if c.sg else "0")
            t.write(f"{node}/feature-gso-tcpv4", "1" if c.gso and c.sg else "0")
            t.write(f"{node}/feature-gso-tcpv6", "1" if c.gso and c.sg else "0")
            t.write(f"{node}/feature-ipv6-csum-offload", "1" if c.csum_offload else "0")
            if not c.csum_offload:
                t.write(f"{node}/feature-no-csum-offload", "1")

        self.xs.run_transaction(publish)
        self.rx.refill()
        # Like Linux netfront we are ready once published (the table writes Initialised and
        # Connected next); the backend connects on seeing them.

    def close(self) -> None:
        """Start an orderly disconnect: Closing; teardown follows when the backend has let go."""
        self._handshake.handle(Event.CLOSE)

    def reconnect(self) -> bool:
        """After Closed: start the handshake again (the backend answers Initialising with
        InitWait).  Anywhere else it is refused (logged, counted): False."""
        return self._handshake.handle(Event.RECONNECT) is not None

    def drop(self) -> None:
        """Let go of the device without a word to xenstore (xenstored is gone): tear down what
        we can alone; grants the backend still maps wait in ``retry_revoke``."""
        self._handshake.handle(Event.DETACHED)

    def stop_watching(self) -> None:
        for path in self._watching:
            try:
                self.xs.unwatch(path, self._token)
            except (XenstoreError, XenstoreConnectionError):
                pass  # gone with xenstored: nothing left to unwatch
        self._watching = []

    def _fail(self, message: str) -> None:
        """Stop using the rings for good (until a reconnect).  Never raises: teardown runs
        whatever xenstore says, for a forced detach may have removed our directory already
        (every write then fails EACCES)."""
        self._handshake.handle(Event.FATAL, message)

    def _teardown(self) -> None:
        self.backend_connected = False
        ev = self.platform.evtchn
        for port in {self.tx_port, self.rx_port}:
            if port > 0:
                ev.close(port)
        self.tx_port = self.rx_port = -1
        if self.tx is not None:
            self._keep_revoking(self.tx.teardown())
            self.tx = None
        if self.rx is not None:
            self._keep_revoking(self.rx.teardown())
            self.rx = None
        for pool in self._pools:
            pool.close()
            self._keep_revoking(pool.revoke)
            pool.revoke = []
        # frames the stack still holds come back to a closed pool later; one the backend
        # still maps then waits in that pool's revoke list: keep the pool until it is empty
        self._closed_pools.extend(p for p in self._pools if p.frames_out)
        self._pools = []
        self.pages = None
        self.retry_revoke()
        if self._revoke:
            log.error(
                "%s: backend still maps %d of our grants; keeping those pages until it lets go",
                self.dev.nodename,
                sum(len(r.refs) for r in self._revoke),
            )

    def _keep_revoking(self, revokes: list[Revoke]) -> None:
        """The one place grants the backend still maps wait (XSA-396).  A ref waits here at
        most once: ending it twice would, once it is ended and granted again, end someone
        else's live grant."""
        pending = {ref for rv in self._revoke for ref in rv.refs}
        for rv in revokes:
            fresh = [ref for ref in rv.refs if ref not in pending]
            if len(fresh) < len(rv.refs):
                log.error("%s: grant refs queued for revoke twice: kept once", self.dev.nodename)
                if not fresh:
                    continue  # its pages wait with the entry already queued
                rv.refs = fresh
            pending.update(fresh)
            self._revoke.append(rv)

    @property
    def pending_revoke(self) -> int:
        self._collect_revokes()
        return sum(len(r.refs) for r in self._revoke)

    def _collect_revokes(self) -> None:
        """Grants queues and pools could not end yet: into the one revoke list."""
        for q in (self.tx, self.rx, *self._pools, *self._closed_pools):
            if q is not None and q.revoke:
                self._keep_revoking(q.revoke)
                q.revoke = []
        self._closed_pools = [p for p in self._closed_pools if p.frames_out]

    def retry_revoke(self) -> int:
        """End the grants the backend held at teardown; free their pages.  Returns refs left."""
        self._collect_revokes()
        self._revoke = [r for r in self._revoke if not r.retry(self.platform)]
        self.stats.grants_held_by_peer = self.pending_revoke
        return self.pending_revoke

    def _refused(self) -> None:
        self.stats.handshake_refused += 1

    # --- data path ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.backend_connected and self.tx is not None and not self.broken

    def send(self, skb: Skb) -> bool:
        """Queue an skb in our memory; False (not taken) while the tx queue is stopped."""
        if self.tx is None or not self.connected:
            self.stats.tx_errors["not_connected"] += 1
            skb.release(self.platform.memory)
            return True
        return self.tx.send(skb)

    @property
    def memory(self) -> PageSource:
        """Where to build skbs for ``send``: the device's page cache while connected."""
        return self.pages if self.pages is not None else self.platform.memory

    def send_frame(self, frame: bytes | memoryview) -> bool:
        """Copy a frame into our memory and queue it; False (not taken) while stopped."""
        if self.tx is None or not self.connected:
            self.stats.tx_errors["not_connected"] += 1
            return True
        return self.tx.send_frame(frame)

    def flush(self) -> None:
        if self.tx is not None and self.tx.flush():
            self._notify(self.tx_port)

    def port_with_responses(self) -> int | None:
        """A port whose ring holds responses not yet taken (tx first), or None: what a busy
        poll looks at, without a system call."""
        tx, rx = self.tx, self.rx
        if tx is not None and tx.ring.unconsumed_responses():
            return self.tx_port
        if rx is not None and rx.ring.unconsumed_responses():
            return self.rx_port
        return None

    def on_event(self, port: int, sink: Callable[[PacketVec], None] | None = None) -> list[Skb]:
        """An event on one of our ports: reap tx, collect rx, refill.  Received packets go to
        ``sink`` as a vector (the fast path: they are ours again when it returns), or come
        back as skbs, which the caller releases (``skb.release()``)."""
        self.stats.events += 1
        if self.tx is None or self.rx is None or port not in (self.tx_port, self.rx_port):
            self.stats.spurious_events += 1
            return []
        skbs: list[Skb] = []
        try:
            if port == self.tx_port:
                self.tx.reap()
                if self.tx.revoke:
                    self.retry_revoke()
                if self.tx.ring.req_prod_pvt != self.tx.ring.req_prod:
                    self.flush()  # the backlog moved onto the ring
            if port == self.rx_port and self.rx is not None:
                rx = self.rx
                while True:
                    vec = rx.poll()
                    if sink is not None:
                        try:
                            sink(vec)
                        finally:
                            rx.release(vec)
                    else:
                        skbs.extend(rx.skbs(vec))
                    if self.rx is None:
                        break
                    if rx.refill():
                        self._notify(self.rx_port)
                    if not rx.more:
                        break
        except (DeviceBroken, PlatformError) as exc:
            for skb in skbs:
                skb.release()
            self._fail(str(exc))
            return []
        return skbs

    def send_frames(
        self, frames: Buffer, lens: Buffer, n: int, *, flags: int = 0, gso_size: int = 0, gso_type: int = 0
    ) -> int:
        """Send ``n`` frames (back to back, u32 lengths) in one go: the fast path.  Returns how
        many were taken; call ``flush`` to publish them."""
        if self.tx is None or not self.connected:
            self.stats.tx_errors["not_connected"] += n
            return n
        return self.tx.send_frames(frames, lens, n, flags=flags, gso_size=gso_size, gso_type=gso_type)

    def _notify(self, port: int) -> None:
        try:
            self.platform.evtchn.notify(port)
            self.stats.notifications_sent += 1
        except PeerGone as exc:
            self._fail(f"backend is gone: {exc}")
