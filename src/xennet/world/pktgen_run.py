"""``xennet pktgen`` as a world of processes: xenstored, a backend, a guest.

``direction="tx"``: the guest builds skbs with the chosen layouts in its own memory and
sends them through netfront (and its too-many-slots policy); the backend checks every frame.
``direction="rx"``: the backend builds them in its memory and delivers them into the guest's
buffers (through the packing and admission policies); the guest checks every frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Literal, get_args, get_type_hints

from ..netback.backend import Netback
from ..netback.interface import NetbackConfig, Vif
from ..netback.tx import TxLimits
from ..netfront.device import Netfront, NetfrontConfig
from ..packet.skb import Csum, Layout, Skb
from ..ports.pktgen import Generator, TrafficSpec, Verifier
from ..xenbus.paths import VifPaths
from ..xenbus.states import XenbusState
from ..xenbus.toolstack import VifSpec
from .host.loop import DomainLoop, backend_events, frontend_events, shut_down_netfront
from .sim.procs import _ctx
from .sim.toolstack import SimToolstack, open_domain

BACKEND, GUEST = 0, 1


@dataclass(frozen=True)
class PktgenJob:
    layouts: tuple[Layout, ...]
    spec: TrafficSpec = field(default_factory=TrafficSpec)
    direction: Literal["tx", "rx"] = "tx"
    rate: float = 0.0  # packets/s, 0 = as fast as possible
    front: NetfrontConfig = field(default_factory=NetfrontConfig)
    back: NetbackConfig = field(default_factory=NetbackConfig)
    deadline_s: float = 120.0
    nr_frames: int = 16384

    def __post_init__(self) -> None:
        directions = get_args(get_type_hints(PktgenJob)["direction"])
        if self.direction not in directions:
            raise ValueError(f"direction={self.direction!r}: choose one of {', '.join(directions)}")
        if not self.layouts:
            raise ValueError("layouts: at least one packet layout")
        if self.rate < 0:
            raise ValueError(f"rate={self.rate}: packets/s, 0 for as fast as possible")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s={self.deadline_s}: must be positive")


def _verify(v: Verifier, skb: Skb) -> None:
    v.check(skb.data(), partial=skb.csum is Csum.PARTIAL)


def _source_loop(
    job: PktgenJob,
    produce: Callable[[Skb], bool],
    gen: Generator,
    mem: Any,
    loop: DomainLoop,
    progress: Synchronized[int],
    done: Callable[[], bool],
    ready: Callable[[], bool],
) -> tuple[int, float, float]:
    sent = 0
    t0 = t1 = 0.0
    deadline = time.monotonic() + job.deadline_s
    pending: Skb | None = None
    while time.monotonic() < deadline:
        loop.run_once(0.0 if (sent < len(job.layouts) and ready()) else 0.05)
        if not ready():
            continue
        if not t0:
            t0 = time.perf_counter()
        while sent < len(job.layouts):
            if job.rate and sent > job.rate * (time.perf_counter() - t0):
                break
            if pending is None:
                pending = gen.skb(job.layouts[sent], mem)
            if not produce(pending):
                break
            pending = None
            sent += 1
            progress.value = sent
        if sent == len(job.layouts) and done():
            t1 = time.perf_counter()
            break
    return sent, t0, t1


def guest_side(
    world_path: str, paths: VifPaths, job: PktgenJob, progress: Synchronized[int]
) -> dict[str, Any]:
    with open_domain(world_path, GUEST) as (platform, xs):
        front = Netfront.for_vif(platform, xs, paths, job.front)
        verifier = Verifier(job.spec)
        got = 0

        def take(skb: Skb) -> None:
            nonlocal got
            _verify(verifier, skb)
            got += 1
            if job.direction == "rx":
                progress.value = got

        on_event = frontend_events(front, take)
        loop = DomainLoop(platform, xs, front.on_watch, on_event)
        t0 = t1 = 0.0
        sent = 0
        try:
            front.start()
            if job.direction == "tx":
                gen = Generator(job.spec)

                def produce(skb: Skb) -> bool:
                    ok = front.send(skb)
                    front.flush()
                    return ok

                sent, t0, t1 = _source_loop(
                    job,
                    produce,
                    gen,
                    platform.memory,
                    loop,
                    progress,
                    done=lambda: front.tx is None or front.tx.in_flight == 0,
                    ready=lambda: front.connected,
                )
            else:
                deadline = time.monotonic() + job.deadline_s
                while time.monotonic() < deadline and not front.broken:
                    loop.run_once(0.05)
                    if xs.try_read(f"{paths.frontend}/pktgen-done") is not None:
                        # the backend put its last packet on the ring before it said so, but
                        # that packet's doorbell may not have woken us yet: take what is there
                        while (port := front.port_with_responses()) is not None:
                            on_event(port)
                        break
            shut_down_netfront(front, loop)
            return {
                "sent": sent,
                "received": got,
                "seconds": (t1 - t0) if t1 else None,
                "verify": {
                    "frames": verifier.frames,
                    "payload_bytes": verifier.payload_bytes,
                    "errors": verifier.errors,
                },
                "stats": front.stats.as_dict(),
                "state": front.dev.state.name,
                "accounting": asdict(platform.accounting()),
            }
        finally:
            loop.close()


def backend_side(
    world_path: str, paths: VifPaths, job: PktgenJob, progress: Synchronized[int]
) -> dict[str, Any]:
    with open_domain(world_path, BACKEND) as (platform, xs):
        back = Netback(platform, xs, job.back)
        verifier = Verifier(job.spec)
        got = 0

        def take(_vif: Vif, skb: Skb) -> None:
            nonlocal got
            _verify(verifier, skb)
            got += 1
            if job.direction == "tx":
                progress.value = got

        loop = DomainLoop(platform, xs, back.on_watch, backend_events(back, take))
        t0 = t1 = 0.0
        sent = 0
        vif_info: dict[str, Any] = {}
        try:
            back.start()
            if job.direction == "rx":
                gen = Generator(job.spec)

                def vif() -> Any:
                    return next(iter(back.vifs.values()), None)

                def produce(skb: Skb) -> bool:
                    v = vif()
                    if v is None or not v.rx_would_take(skb):
                        if v is not None:
                            v.kick_rx()
                        return False
                    v.send_to_guest(skb)
                    v.kick_rx()
                    return True

                sent, t0, t1 = _source_loop(
                    job,
                    produce,
                    gen,
                    platform.memory,
                    loop,
                    progress,
                    done=lambda: vif() is None or vif().rx is None or vif().rx.queued == 0,
                    ready=lambda: vif() is not None and vif().connected,
                )
                xs.write(f"{paths.frontend}/pktgen-done", "1")
            deadline = time.monotonic() + job.deadline_s
            seen = job.direction == "rx" and sent > 0  # the source loop ran on a connected vif
            while time.monotonic() < deadline:
                loop.run_once(0.05)
                for v in back.vifs.values():
                    v.flush_tx_responses()
                    v.kick_rx()
                    seen = seen or v.connected
                    vif_info = {"name": v.name, "state": v.dev.state.name, "stats": v.stats.as_dict()}
                if seen and all(v.dev.state == XenbusState.Closed for v in back.vifs.values()):
                    break
            back.stop()
            return {
                "sent": sent,
                "received": got,
                "seconds": (t1 - t0) if t1 else None,
                "verify": {
                    "frames": verifier.frames,
                    "payload_bytes": verifier.payload_bytes,
                    "errors": verifier.errors,
                },
                "vif": vif_info,
                "accounting": asdict(platform.accounting()),
            }
        finally:
            loop.close()


@dataclass
class PktgenResult:
    job: PktgenJob
    guest: dict[str, Any]
    backend: dict[str, Any]
    accounting_after: dict[int, dict[str, int]]
    wall_s: float

    @property
    def source(self) -> dict[str, Any]:
        return self.guest if self.job.direction == "tx" else self.backend

    @property
    def sink(self) -> dict[str, Any]:
        return self.backend if self.job.direction == "tx" else self.guest

    @property
    def problems(self) -> list[str]:
        out = []
        if self.sink["verify"]["errors"]:
            out.append(f"verification: {self.sink['verify']['errors'][:3]}")
        for d, a in self.accounting_after.items():
            if any(a.values()):
                out.append(f"domain {d} still holds {a}")
        if self.source["sent"] != len(self.job.layouts):
            out.append(f"sent {self.source['sent']} of {len(self.job.layouts)}")
        return out

    def summary(self) -> dict[str, Any]:
        secs = self.source["seconds"] or float("nan")
        frames = self.sink["verify"]["frames"]
        payload = self.sink["verify"]["payload_bytes"]
        stats = self.guest["stats"] if self.job.direction == "tx" else self.backend["vif"].get("stats", {})
        slots = stats.get("tx_slots" if self.job.direction == "tx" else "rx_slots", 0)
        sent_packets = stats.get("tx_packets" if self.job.direction == "tx" else "rx_packets", 0)
        return {
            "direction": self.job.direction,
            "packets_generated": self.source["sent"],
            "packets_on_ring": sent_packets,
            "frames_verified": frames,
            "pps": self.source["sent"] / secs,
            "gbit_s": payload * 8 / secs / 1e9,
            "slots_per_packet": slots / sent_packets if sent_packets else 0.0,
            "bytes_copied": stats.get("tx_bytes_copied", 0),
            "policy": dict(stats.get("tx_policy", {})),
            "drops": {
                **self.guest["stats"].get("tx_errors", {}),
                **self.guest["stats"].get("rx_errors", {}),
                **{
                    f"backend {k}": v
                    for k, v in self.backend["vif"].get("stats", {}).get("tx_errors", {}).items()
                },
                **{
                    f"backend {k}": v
                    for k, v in self.backend["vif"].get("stats", {}).get("rx_dropped", {}).items()
                },
            },
            "verify_errors": self.sink["verify"]["errors"][:5],
            "accounting_after": self.accounting_after,
            "problems": self.problems,
        }


def run_pktgen(job: PktgenJob, on_progress: Callable[[int], None] | None = None) -> PktgenResult:
    t0 = time.monotonic()
    progress = _ctx.Value("q", 0)
    with SimToolstack("xennet-pktgen-") as ts:
        assert ts.xs is not None
        ts.domain(BACKEND, job.nr_frames)
        ts.domain(GUEST, job.nr_frames)
        paths = VifPaths(GUEST, BACKEND, 0)
        ts.attach(paths, VifSpec(mac=job.spec.src_mac))
        back = ts.start("pktgen-backend", backend_side, ts.path, paths, job, progress)
        guest = ts.start("pktgen-guest", guest_side, ts.path, paths, job, progress)
        end = time.monotonic() + job.deadline_s + 30
        while not guest.poll() and time.monotonic() < end:
            if on_progress is not None:
                on_progress(progress.value)
            time.sleep(0.05)
        g = guest.result(1)
        b = back.result(30)
        if on_progress is not None:
            on_progress(progress.value)
        ts.detach(paths)
        ts.xs.release(GUEST)
        return PktgenResult(job, g, b, ts.accounting(BACKEND, GUEST), time.monotonic() - t0)


def job_for(layouts: Sequence[Layout], **kw: Any) -> PktgenJob:
    return PktgenJob(tuple(layouts), **kw)


__all__ = ["PktgenJob", "PktgenResult", "TxLimits", "job_for", "run_pktgen"]
