"""A netback vif: the backend half of the xenbus handshake and its tx/rx queues."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.types import Buffer
from ..packet.pool import PoolPages
from ..packet.skb import GSO_TCPV4, GSO_TCPV6, PageSource, Skb, build_skb, linear_layout
from ..platform.base import Mapping, PeerGone, Platform, PlatformError
from ..xenbus.device import HandshakeError, XenbusDevice
from ..xenbus.handshake import Event, Runner
from ..xenbus.states import XenbusState
from ..xenstore.client import Transaction, XenstoreClient, XenstoreConnectionError, XenstoreError
from .errors import FatalFrontendError
from .handshake import TABLE, Action
from .rx import RxQueue
from .stats import VifStats
from .tx import TxBatch, TxLimits, TxQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetbackConfig:
    split_event_channels: bool = True
    tx_limits: TxLimits = field(default_factory=TxLimits)
    rx_queue_bytes: int = 1 << 20
    rx_packing: str = "full"  # seed | full
    rx_admission: str = "fit-or-wait"  # estimate | fit-or-wait
    rx_stall_timeout_s: float = 10.0  # XSA-392
    sg: bool = True
    gso: bool = True
    csum_offload: bool = True  # False writes feature-no-csum-offload (IPv4)
    ipv6_csum_offload: bool = True
    pool_frames: int = 4096  # frames a vif's page pool may hold (packets in flight, queued)

    def __post_init__(self) -> None:
        from .rxpolicy.admission import ADMISSION_POLICIES
        from .rxpolicy.packing import PACKING_POLICIES

        if self.rx_packing not in PACKING_POLICIES:
            raise ValueError(
                f"rx packing {self.rx_packing!r}: choose one of {', '.join(sorted(PACKING_POLICIES))}"
            )
        if self.rx_admission not in ADMISSION_POLICIES:
            known = ", ".join(sorted(ADMISSION_POLICIES))
            raise ValueError(f"rx admission {self.rx_admission!r}: choose one of {known}")
        if self.rx_queue_bytes < 65536 + 18:
            raise ValueError(f"rx_queue_bytes {self.rx_queue_bytes}: at least one 64 KiB packet")
        if self.rx_stall_timeout_s <= 0:
            raise ValueError("rx_stall_timeout_s must be positive")
        if self.pool_frames < 1024:
            raise ValueError(f"pool_frames {self.pool_frames}: at least 1024 (a full ring's worth)")


class Vif:
    """One vif ``<backend>/backend/vif/<domid>/<handle>``."""

    def __init__(
        self, platform: Platform, xs: XenstoreClient, nodename: str, config: NetbackConfig | None = None
    ) -> None:
        self.platform = platform
        self.xs = xs
        self.config = config or NetbackConfig()
        self.dev = XenbusDevice(xs, nodename)
        self.stats = VifStats()
        self.front_domid = -1
        self.front_sg = self.front_gso = False
        self.pages: PoolPages | None = None
        self.tx: TxQueue | None = None
        self.rx: RxQueue | None = None
        self._maps: list[Mapping] = []
        self.tx_port = self.rx_port = -1
        self.mac = ""
        self._token = f"netback:{nodename}"
        self._watches: list[str] = []
        self.removed = False
        self._handshake = Runner(
            self.name,
            TABLE,
            self.dev,
            self._perform,
            self._refused,
            (HandshakeError, XenstoreError, PlatformError),
        )

    @property
    def name(self) -> str:
        parts = self.dev.nodename.rsplit("/", 2)
        return f"vif{parts[-2]}.{parts[-1]}"

    # --- xenbus -------------------------------------------------------------

    def probe(self) -> None:
        """The toolstack created our directory: advertise features, wait for the frontend."""
        frontend = self.dev.read("frontend")
        fid = self.dev.read("frontend-id")
        if not frontend or fid is None or not fid.strip().isdigit():
            raise HandshakeError(f"{self.dev.nodename}: no usable frontend/frontend-id")
        self.dev.otherend = frontend.strip()
        self.front_domid = int(fid)
        self.mac = (self.dev.read("mac") or "").strip()
        self.dev.adopt_state(XenbusState.parse(self.dev.read("state")))
        node = self.dev.nodename
        c = self.config

        def offer(t: Transaction) -> None:
            t.write(f"{node}/feature-rx-copy", "1")
            t.write(f"{node}/feature-rx-flip", "0")
            t.write(f"{node}/feature-sg", "1" if c.sg else "0")
            t.write(f"{node}/feature-gso-tcpv4", "1" if c.gso and c.sg else "0")
            t.write(f"{node}/feature-gso-tcpv6", "1" if c.gso and c.sg else "0")
            # what we offer for the frontend's tx; we still take csum_blank we did not
            # offer (as Linux netback does): csum_setup finds the offsets either way
            t.write(f"{node}/feature-no-csum-offload", "0" if c.csum_offload else "1")
            t.write(f"{node}/feature-ipv6-csum-offload", "1" if c.ipv6_csum_offload else "0")
            t.write(f"{node}/feature-split-event-channels", "1" if c.split_event_channels else "0")
            t.write(f"{node}/multi-queue-max-queues", "1")

        self.xs.run_transaction(offer)
        self.dev.switch_state(XenbusState.InitWait)
        for path in (f"{self.dev.otherend}/state", f"{node}/online"):
            self.xs.watch(path, self._token)
            self._watches.append(path)

    def on_watch(self, path: str, token: str) -> None:
        if token != self._token:
            return
        try:
            if self.dev.gone():
                # the toolstack removed us: a state write now would create the node again
                self._handshake.handle(Event.DETACHED)
                return
            # online=0 from the toolstack outranks whatever the frontend says: no reconnect
            offline = self.dev.read("online") == "0"
            if path == f"{self.dev.nodename}/online" and not offline:
                return
            event = Event.OFFLINE if offline else self.dev.peer_event()
        except (XenstoreError, PlatformError) as exc:
            self._fail("handshake", f"handshake: {exc}")
            return
        self._handshake.handle(event)

    def _perform(self, action: enum.Enum, message: str, reason: str) -> None:
        """One effect of a handshake transition (the table is in ``handshake.py``)."""
        if action == Action.CONNECT:
            self._connect()
        elif action == Action.DISCONNECT:
            self._disconnect()
        elif action == Action.RECORD_ERROR:
            self.stats.fatal[reason] += 1
            self.dev.record_error(message)
        elif action == Action.PEER_GONE:
            if not self.stats.fatal["peer_gone"]:  # one line and one count per death
                log.error("%s: frontend domain %d is gone; disconnecting", self.name, self.front_domid)
                self.stats.fatal["peer_gone"] += 1
        elif action == Action.STOP_WATCHING:
            for path in self._watches:
                try:
                    self.xs.unwatch(path, self._token)
                except (XenstoreError, XenstoreConnectionError):
                    pass  # gone with xenstored: nothing left to unwatch
            self._watches.clear()

    def _refused(self) -> None:
        self.stats.handshake_refused += 1

    def _connect(self) -> None:
        d = self.dev
        if d.read_other("request-rx-copy") != "1":
            raise HandshakeError("frontend did not request rx-copy; flipping is not supported")
        tx_ref = d.read_other_int("tx-ring-ref")
        rx_ref = d.read_other_int("rx-ring-ref")
        split = d.read_other("event-channel-tx") is not None
        if split and not self.config.split_event_channels:
            raise HandshakeError("frontend asked for split event channels, which we did not offer")
        if split:
            tx_evt = d.read_other_int("event-channel-tx", lo=1)
            rx_evt = d.read_other_int("event-channel-rx", lo=1)
        else:
            tx_evt = rx_evt = d.read_other_int("event-channel", lo=1)
        # one page as both rings, or one port as both channels, would have the two queues
        # overwrite each other's indices: refused, as a peer's references must be distinct
        if tx_ref == rx_ref:
            raise HandshakeError(f"tx-ring-ref and rx-ring-ref are the same grant ({tx_ref})")
        if split and tx_evt == rx_evt:
            raise HandshakeError(f"event-channel-tx and event-channel-rx are the same port ({tx_evt})")
        try:
            tx_map = self.platform.mapper.map(self.front_domid, [tx_ref], writable=True)
            self._maps.append(tx_map)
            rx_map = self.platform.mapper.map(self.front_domid, [rx_ref], writable=True)
            self._maps.append(rx_map)
            ev = self.platform.evtchn
            self.tx_port = ev.bind_interdomain(self.front_domid, tx_evt)
            self.rx_port = ev.bind_interdomain(self.front_domid, rx_evt) if split else self.tx_port
        except PlatformError:
            self._disconnect()
            raise
        c = self.config
        self.front_sg = c.sg and d.other_feature("feature-sg")
        # what the frontend takes on rx: csum_blank for IPv4 unless it says no, for IPv6 only
        # if it says yes; GSO per type, only with that version's checksum offload (Linux's
        # xenvif_fix_features, and TSO needs the checksum feature)
        csum4 = not d.other_feature("feature-no-csum-offload")
        csum6 = d.other_feature("feature-ipv6-csum-offload")
        gso_types = [
            t
            for t, node, csum in (
                (GSO_TCPV4, "feature-gso-tcpv4", csum4),
                (GSO_TCPV6, "feature-gso-tcpv6", csum6),
            )
            if csum and d.other_feature(node)
        ]
        self.front_gso = self.front_sg and c.gso and bool(gso_types)
        self.pages = PoolPages(self.platform, limit=c.pool_frames, name=f"{self.name} pool")
        self.tx = TxQueue(self.platform, self.front_domid, tx_map, self.stats, c.tx_limits, self.pages)
        self.rx = RxQueue(
            self.platform,
            self.front_domid,
            rx_map,
            self.stats,
            c.rx_queue_bytes,
            packing=c.rx_packing,
            admission=c.rx_admission,
            sg=self.front_sg,
            gso=self.front_gso,
            stall_timeout_s=c.rx_stall_timeout_s,
            pages=self.pages,
            csum4=csum4,
            csum6=csum6,
            gso_types=gso_types,
        )
        log.info(
            "%s: connected to domain %d (%s event channels)",
            self.name,
            self.front_domid,
            "split" if split else "one",
        )

    def _disconnect(self) -> None:
        """Release everything the frontend gave us: queues, maps, ports.  Safe to call twice."""
        if self.tx is not None:
            self.tx.teardown()
            self.tx = None
        if self.rx is not None:
            self.rx.teardown()
            self.rx = None
        if self.pages is not None:
            self.pages.close()
            self.pages = None
        ev = self.platform.evtchn
        for port in {self.tx_port, self.rx_port}:
            if port > 0:
                ev.close(port)
        self.tx_port = self.rx_port = -1
        for m in self._maps:
            self.platform.mapper.unmap(m)
        self._maps.clear()

    def fail(self, reason: str, message: str) -> None:
        """Take the vif down for a local reason (its port went away): counted, one log line."""
        self._fail(reason, message)

    def _fail(self, reason: str, message: str) -> None:
        # the FATAL row's RECORD_ERROR writes the one log line (and our error node)
        self._handshake.handle(Event.FATAL, f"disconnecting domain {self.front_domid}: {message}", reason)

    def frontend_died(self) -> None:
        """The frontend's domain is gone: release what it gave us; nobody is left to handshake with."""
        self._handshake.handle(Event.RELEASED)

    def remove(self) -> None:
        """The toolstack removed our directory (or the backend stops): drop the device."""
        self._handshake.handle(Event.DETACHED)
        self.removed = True

    # --- data path ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.tx is not None

    def on_event(self, port: int, sink: Callable[[TxBatch], None] | None = None) -> list[Skb]:
        """An event on one of our ports.  What the guest transmitted goes, batch by batch, to
        ``sink`` (the fast path: its packets are ours again when it returns), or comes back as
        skbs (the caller releases each; for mapped data that answers the guest).  A hostile
        frontend is cut off here, at a safe point (XSA-90)."""
        self.stats.events += 1
        if self.tx is None or self.rx is None or port not in (self.tx_port, self.rx_port):
            self.stats.spurious_events += 1
            return []
        skbs: list[Skb] = []
        try:
            if port == self.tx_port:
                tx = self.tx
                while True:
                    batch = tx.process()
                    # the ring emptied (a lone packet, a burst's tail): the packet goes to
                    # the host before the frontend is woken for its answers, so a ping's
                    # reply is not queued behind the frontend's wake-up; with requests still
                    # waiting, the answers go first, so the frontend refills while we copy
                    late = batch.notify and sink is not None and not tx.ring.unconsumed_requests()
                    if batch.notify and not late:
                        self._notify(self.tx_port)
                    if sink is not None:
                        try:
                            sink(batch)
                        finally:
                            tx.release(batch.vec)
                            if late:
                                self._notify(self.tx_port)
                    else:
                        skbs.extend(tx.skbs(batch.vec))
                        skbs.extend(batch.skbs)
                    if self.tx is None or not tx.more():
                        break
            if port == self.rx_port and self.rx is not None and self.rx.queued:
                self.kick_rx()
        except FatalFrontendError as exc:
            self._fail(exc.reason, str(exc))
            # the packets before the hostile one were answered: they are delivered (XSA-90);
            # mapped ones were unshared by the teardown
        return skbs

    def flush_tx_responses(self) -> None:
        """Answer slots of mapped packets released since the last event."""
        if self.tx is not None and self.tx.take_notify():
            self._notify(self.tx_port)

    def rx_has_room(self, length: int) -> bool:
        return self.rx is not None and self.rx.has_room(length)

    def rx_would_take(self, skb: Skb) -> bool:
        return self.rx is not None and self.rx.would_take(skb)

    def send_to_guest(self, skb: Skb) -> bool:
        """Queue an skb toward the guest (takes one reference)."""
        if self.rx is None:
            self.stats.rx_dropped["not_connected"] += 1
            skb.release()
            return False
        return self.rx.enqueue(skb)

    def send_frame(self, frame: bytes) -> bool:
        """Copy a frame into our memory and queue it toward the guest."""
        if self.rx is None:
            self.stats.rx_dropped["not_connected"] += 1
            return False
        return self.send_to_guest(build_skb(frame, linear_layout(len(frame)), self.memory))

    def send_frames(
        self, frames: Buffer, lens: Buffer, n: int, *, flags: int = 0, gso_size: int = 0, gso_type: int = 0
    ) -> int:
        """Queue ``n`` frames (back to back, u32 lengths) toward the guest: the fast path.
        Returns how many were taken; the rest did not fit now."""
        if self.rx is None:
            self.stats.rx_dropped["not_connected"] += n
            return n
        return self.rx.enqueue_frames(frames, lens, n, flags=flags, gso_size=gso_size, gso_type=gso_type)

    @property
    def memory(self) -> PageSource:
        """Where to build skbs toward the guest: the vif's page cache while connected."""
        return self.pages if self.pages is not None else self.platform.memory

    def kick_rx(self) -> None:
        if self.rx is None:
            return
        try:
            if self.rx.process():
                self._notify(self.rx_port)
        except FatalFrontendError as exc:
            self._fail(exc.reason, str(exc))

    def _notify(self, port: int) -> None:
        try:
            self.platform.evtchn.notify(port)
            self.stats.notifications_sent += 1
        except PeerGone as exc:
            self._fail("peer_gone", f"frontend is gone: {exc}")
