"""The two domain programs of a sim world: a driver domain running netback, a guest running netfront.

Each runs in its own process, attaches to the world's shared memory by path, and
talks to xenstored over its own socket.  Results go back to the toolstack as a dict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ...netback.backend import Netback
from ...netback.interface import Vif
from ...netfront.device import Netfront
from ...packet.skb import Skb
from ...xenbus.paths import VifPaths
from ...xenbus.states import XenbusState
from ..host.loop import DomainLoop, backend_events, frontend_events, shut_down_netfront
from ..traffic import check_frame, mac_bytes, make_frame
from .toolstack import open_domain

log = logging.getLogger(__name__)

GUEST_TO_BACKEND = 1
BACKEND_TO_GUEST = 2
BACKEND_MAC = "fe:ff:ff:ff:ff:ff"


@dataclass(frozen=True)
class TrafficPlan:
    to_backend: int  # frames the guest transmits
    to_guest: int  # frames the backend delivers into the guest's buffers
    seed: int
    mac: str
    deadline_s: float = 60.0


def guest_main(world_path: str, domid: int, paths: VifPaths, plan: TrafficPlan) -> dict[str, object]:
    with open_domain(world_path, domid) as (platform, xs):
        front = Netfront.for_vif(platform, xs, paths)
        dst, src = mac_bytes(BACKEND_MAC), mac_bytes(plan.mac)
        received = 0
        mismatches: list[str] = []
        t_rx0 = t_rx1 = 0.0

        def take(skb: Skb) -> None:
            nonlocal received, t_rx0, t_rx1
            if received == 0:
                t_rx0 = time.perf_counter()
            err = check_frame(skb.data(), plan.seed, BACKEND_TO_GUEST, received, src, dst)
            if err:
                mismatches.append(err)
            received += 1
            t_rx1 = time.perf_counter()

        loop = DomainLoop(platform, xs, front.on_watch, frontend_events(front, take))
        deadline = time.monotonic() + plan.deadline_s
        try:
            front.start()
            sent = 0
            t_tx0 = t_tx1 = 0.0
            while time.monotonic() < deadline:
                loop.run_once(0.05)
                if front.broken or front.dev.state == XenbusState.Closed:
                    break
                if not front.connected:
                    continue
                if sent < plan.to_backend:
                    if sent == 0:
                        t_tx0 = time.perf_counter()
                    while sent < plan.to_backend and front.send_frame(
                        make_frame(plan.seed, GUEST_TO_BACKEND, sent, dst, src)
                    ):
                        sent += 1
                    front.flush()
                if front.tx is None:
                    break  # the device failed while sending
                if sent == plan.to_backend and front.tx.in_flight == 0 and not t_tx1:
                    t_tx1 = time.perf_counter()
                if t_tx1 and received >= plan.to_guest:
                    break
            # a dead or stuck backend may still map our pages: the toolstack gets time to reap it
            shut_down_netfront(front, loop)
            return {
                "role": "guest",
                "state": front.dev.state.name,
                "broken": front.broken,
                "error": xs.try_read(f"{front.dev.nodename}/error"),
                "transitions": [s.name for s in front.dev.transitions],
                "sent": sent,
                "received": received,
                "mismatches": mismatches[:10],
                "tx_seconds": (t_tx1 - t_tx0) if t_tx1 else None,
                "rx_seconds": (t_rx1 - t_rx0) if received > 1 else None,
                "stats": front.stats.as_dict(),
                "accounting": platform.accounting().__dict__,
            }
        finally:
            loop.close()


def serve_backend(world_path: str, domid: int, stop_path: str, echo: bool = True) -> dict[str, object]:
    """A backend domain that serves every vif until ``stop_path`` appears in xenstore.

    With ``echo`` each frame a guest transmits is sent back to it (source and destination
    swapped), which lets a guest check its own traffic end to end.
    """
    with open_domain(world_path, domid) as (platform, xs):
        back = Netback(platform, xs)

        def take(vif: Vif, skb: Skb) -> None:
            if echo:
                frame = skb.data()
                vif.send_frame(frame[6:12] + frame[0:6] + frame[12:])

        loop = DomainLoop(platform, xs, back.on_watch, backend_events(back, take))
        try:
            back.start()
            xs.watch(stop_path, "stop")
            while xs.try_read(stop_path) is None:
                loop.run_once(0.05)
                for vif in back.vifs.values():
                    vif.kick_rx()
                    vif.flush_tx_responses()
            back.stop()
            return {"role": "backend", "vifs": back.report(), "accounting": platform.accounting().__dict__}
        finally:
            loop.close()


def backend_main(world_path: str, domid: int, plan: TrafficPlan) -> dict[str, object]:
    """Serve vifs until the one we served has closed again (demo: one connection)."""
    with open_domain(world_path, domid) as (platform, xs):
        back = Netback(platform, xs)
        dst, src = mac_bytes(plan.mac), mac_bytes(BACKEND_MAC)
        got = 0
        queued = 0
        mismatches: list[str] = []
        served: dict[str, object] = {}

        def take(_vif: Vif, skb: Skb) -> None:
            nonlocal got
            err = check_frame(skb.data(), plan.seed, GUEST_TO_BACKEND, got, src, dst)
            if err:
                mismatches.append(err)
            got += 1

        loop = DomainLoop(platform, xs, back.on_watch, backend_events(back, take))
        deadline = time.monotonic() + plan.deadline_s + 10
        seen_connected = False
        try:
            back.start()
            while time.monotonic() < deadline:
                loop.run_once(0.05)
                for vif in back.vifs.values():
                    if vif.connected:
                        seen_connected = True
                        # guest -> backend first, then backend -> guest: each direction timed alone
                        while got >= plan.to_backend and queued < plan.to_guest:
                            frame = make_frame(plan.seed, BACKEND_TO_GUEST, queued, dst, src)
                            if not vif.rx_has_room(len(frame)):
                                break  # the demo waits for the guest instead of dropping
                            vif.send_frame(frame)
                            queued += 1
                        vif.kick_rx()
                    served = {
                        "vif": vif.name,
                        "state": vif.dev.state.name,
                        "transitions": [s.name for s in vif.dev.transitions],
                        "stats": vif.stats.as_dict(),
                    }
                if seen_connected and all(v.dev.state == XenbusState.Closed for v in back.vifs.values()):
                    break
            back.stop()
            return {
                "role": "backend",
                "received": got,
                "queued_to_guest": queued,
                "mismatches": mismatches[:10],
                **served,
                "accounting": platform.accounting().__dict__,
            }
        finally:
            loop.close()
