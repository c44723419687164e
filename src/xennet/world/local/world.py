"""The deterministic in-process mode: a backend domain, a guest, xenstored and the toolstack
in one process, running the very same netfront/netback/platform/xenstore code.

Shared memory and event channels are the sim platform's real ones; only xenstore goes
through an in-process transport instead of a socket.  Work is dispatched in a fixed order
(``pump``), so a test sees the same interleaving every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ...netback.backend import Netback
from ...netback.interface import NetbackConfig, Vif
from ...netfront.device import Netfront, NetfrontConfig
from ...packet.skb import Layout, Skb
from ...platform.sim import SimPlatform, SimWorld
from ...xenbus.paths import VifPaths
from ...xenbus.toolstack import VifSpec, attach_vif, detach_vif
from ...xenstore.client import XenstoreClient
from ...xenstore.server import XenstoredCore
from ..host.loop import DomainLoop

BACKEND = 0
GUEST = 1


@dataclass
class LocalWorld:
    nr_frames: int = 2048
    backend_config: NetbackConfig = field(default_factory=NetbackConfig)
    guest_domids: tuple[int, ...] = (GUEST,)

    def __post_init__(self) -> None:
        self.core = XenstoredCore()
        self.sim = SimWorld.create()
        self.platforms: dict[int, SimPlatform] = {}
        self.clients: dict[int, XenstoreClient] = {}
        self.loops: dict[int, DomainLoop] = {}
        self.fronts: dict[tuple[int, int], Netfront] = {}  # (domid, handle) -> netfront
        self.to_backend: list[tuple[str, bytes]] = []  # (vif name, frame) in arrival order
        self.to_guest: dict[tuple[int, int], list[bytes]] = {}
        self.received_skbs: dict[tuple[int, int], list[Layout]] = {}  # layouts as netfront built them
        self.on_backend_skb: Callable[[Vif, Skb], None] | None = None
        try:
            self.toolstack = XenstoreClient.in_process(self.core, 0)
            for domid in (BACKEND, *self.guest_domids):
                self.sim.create_domain(domid, nr_frames=self.nr_frames)
                if domid != BACKEND:
                    self.toolstack.introduce(domid, 0, 0)
                self.platforms[domid] = self.sim.platform(domid)
                self.clients[domid] = XenstoreClient.in_process(self.core, domid)
            self.netback = Netback(self.platforms[BACKEND], self.clients[BACKEND], self.backend_config)
            self.loops[BACKEND] = DomainLoop(
                self.platforms[BACKEND], self.clients[BACKEND], self.netback.on_watch, self._backend_event
            )
            for domid in self.guest_domids:
                self.loops[domid] = DomainLoop(
                    self.platforms[domid],
                    self.clients[domid],
                    self._guest_watch(domid),
                    self._guest_event(domid),
                )
            self.netback.start()
            self.pump()
        except BaseException:
            self.close()
            raise

    # --- dispatch -----------------------------------------------------------------

    def _backend_event(self, port: int) -> None:
        vif = self.netback.vif_for_port(port)
        if vif is None:
            return
        for skb in vif.on_event(port):
            if self.on_backend_skb is not None:
                self.on_backend_skb(vif, skb)  # the callee owns the skb now
                continue
            self.to_backend.append((vif.name, skb.data()))
            skb.release()

    def _guest_watch(self, domid: int):  # type: ignore[no-untyped-def]
        def on_watch(path: str, token: str) -> None:
            for (d, _h), front in list(self.fronts.items()):
                if d == domid:
                    front.on_watch(path, token)

        return on_watch

    def _guest_event(self, domid: int):  # type: ignore[no-untyped-def]
        def on_event(port: int) -> None:
            for (d, h), front in self.fronts.items():
                if d == domid and port in (front.tx_port, front.rx_port):
                    got = self.to_guest.setdefault((d, h), [])
                    for skb in front.on_event(port):
                        got.append(skb.data())
                        self.received_skbs.setdefault((d, h), []).append(skb.layout)
                        skb.release()
                    return

        return on_event

    def pump(self, max_rounds: int = 100_000) -> int:
        """Run every domain's ready work, in a fixed order, until nothing is left."""
        total = 0
        for _ in range(max_rounds):
            handled = 0
            for loop in self.loops.values():
                handled += loop.poll()
            for vif in self.netback.vifs.values():
                if vif.rx is not None and vif.rx.queued:
                    vif.kick_rx()
                vif.flush_tx_responses()
            if not handled:
                return total
            total += handled
        raise RuntimeError(f"world still busy after {max_rounds} rounds: a livelock")

    # --- toolstack --------------------------------------------------------------------

    def paths(self, handle: int = 0, domid: int = GUEST) -> VifPaths:
        return VifPaths(domid, BACKEND, handle)

    def attach(
        self,
        handle: int = 0,
        spec: VifSpec | None = None,
        config: NetfrontConfig | None = None,
        domid: int = GUEST,
        start: bool = True,
    ) -> Netfront:
        paths = self.paths(handle, domid)
        attach_vif(self.toolstack, paths, spec or VifSpec())
        front = Netfront.for_vif(self.platforms[domid], self.clients[domid], paths, config)
        self.fronts[(domid, handle)] = front
        if start:
            front.start()
            self.pump()
        return front

    def vif(self, handle: int = 0, domid: int = GUEST) -> Vif:
        return self.netback.vifs[self.paths(handle, domid).backend]

    def detach(self, handle: int = 0, domid: int = GUEST) -> None:
        front = self.fronts.get((domid, handle))
        if front is not None:
            front.close()
            self.pump()
            front.stop_watching()
            del self.fronts[(domid, handle)]
        detach_vif(self.toolstack, self.paths(handle, domid))
        self.pump()

    def send(self, frames: list[bytes], handle: int = 0, domid: int = GUEST) -> int:
        """Transmit from the guest, waiting for ring space as a driver would.  Returns frames sent."""
        front = self.fronts[(domid, handle)]
        sent = 0
        for frame in frames:
            while not front.send_frame(frame):
                front.flush()
                if not self.pump():
                    return sent
            sent += 1
        front.flush()
        self.pump()
        return sent

    def deliver(self, frames: list[bytes], handle: int = 0, domid: int = GUEST) -> int:
        """Queue frames toward the guest on its vif, then run the world.  Returns frames queued."""
        vif = self.vif(handle, domid)
        queued = 0
        for frame in frames:
            while not vif.rx_has_room(len(frame)):
                vif.kick_rx()
                if not self.pump():
                    return queued
            if vif.send_frame(frame):
                queued += 1
        vif.kick_rx()
        self.pump()
        return queued

    def held(self) -> dict[int, tuple[int, int, int, int]]:
        """(pages, grants, maps, ports) each domain holds now: what leak checks compare."""
        out = {}
        for domid in self.platforms:
            a = self.sim.accounting(domid)
            out[domid] = (a.pages, a.grants, a.maps, a.ports)
        return out

    def close(self) -> None:
        for loop in self.loops.values():
            loop.close()
        for client in getattr(self, "clients", {}).values():
            client.close()
        for platform in getattr(self, "platforms", {}).values():
            platform.close()
        if getattr(self, "toolstack", None) is not None:
            self.toolstack.close()
        self.sim.destroy()

    def __enter__(self) -> LocalWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
