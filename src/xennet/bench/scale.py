"""One backend process serving many guests: every guest sends frames and receives them back
(the backend echoes), and the backend's resident memory is read at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..netback.backend import Netback
from ..netback.tx import TxBatch
from ..netfront.device import Netfront
from ..world.host.loop import DomainLoop, shut_down_netfront
from ..world.sim.toolstack import SimToolstack, open_domain
from ..xenbus.paths import VifPaths
from ..xenbus.states import XenbusState
from .small import BACKEND_MAC, BATCH, GUEST_MAC, MIN_FRAME, Counter, frame_batch

BACKEND = 0


@dataclass(frozen=True)
class ScaleJob:
    guests: int = 32
    frames: int = 20_000  # each guest sends this many, and gets them back
    size: int = 64
    deadline_s: float = 120.0
    backend_frames: int = 65536  # the backend domain's memory (256 MiB; RSS counts touched pages)

    def __post_init__(self) -> None:
        for name in ("guests", "frames", "backend_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: at least 1")
        if not MIN_FRAME <= self.size <= 65536:
            raise ValueError(f"size={self.size}: {MIN_FRAME} to 65536 bytes")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s={self.deadline_s}: must be positive")


#: /proc/self/status lines of a resident set: the whole, and its private, file and shared parts
RSS_FIELDS = {"VmRSS": "rss_mib", "RssAnon": "anon_mib", "RssFile": "file_mib", "RssShmem": "shmem_mib"}


def rss_parts() -> dict[str, float]:
    """This process's resident memory in MiB: ``rss_mib`` and its parts.  ``shmem_mib`` is the
    shared memory it touched, the backend's own domain file and the guests' files it copies
    from and to (in sim a grant copy reads the granting domain's file); ``anon_mib`` is its
    private heap."""
    out = dict.fromkeys(RSS_FIELDS.values(), 0.0)
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in RSS_FIELDS:
                out[RSS_FIELDS[key]] = int(rest.split()[0]) / 1024
    return out


def scale_guest(world_path: str, domid: int, paths: VifPaths, job: ScaleJob) -> dict[str, Any]:
    with open_domain(world_path, domid) as (platform, xs):
        front = Netfront.for_vif(platform, xs, paths)
        got = Counter()

        def on_event(port: int) -> None:
            front.on_event(port, lambda vec: got.add(vec.delivered, vec.delivered_bytes))

        loop = DomainLoop(platform, xs, front.on_watch, on_event)
        deadline = time.monotonic() + job.deadline_s
        frames, lens = frame_batch(BATCH, job.size, BACKEND_MAC, GUEST_MAC)
        sent = 0
        try:
            front.start()
            while not front.connected and time.monotonic() < deadline:
                loop.run_once(0.05)
            while (sent < job.frames or got.frames < job.frames) and time.monotonic() < deadline:
                if sent < job.frames and front.connected:
                    sent += front.send_frames(frames, lens, min(BATCH, job.frames - sent))
                    front.flush()
                loop.run_once(0.01)
            shut_down_netfront(front, loop)
            return {"domid": domid, "sent": sent, "got": got.frames, "state": front.dev.state.name}
        finally:
            loop.close()


def scale_backend(world_path: str, job: ScaleJob) -> dict[str, Any]:
    """Echo every frame a guest sends back to it; report the peak RSS (with its parts) once
    every guest has closed."""
    with open_domain(world_path, BACKEND) as (platform, xs):
        back = Netback(platform, xs)
        per_vif: dict[str, int] = {}
        owed: dict[str, int] = {}  # frames to echo that the vif's queue did not take yet
        peak = rss_parts()

        def pay(vif: Any) -> None:
            while owed.get(vif.name):
                k = vif.send_frames(*_echo_frames(min(owed[vif.name], BATCH), job.size))
                if not k:
                    break
                owed[vif.name] -= k
            vif.kick_rx()

        def on_event(port: int) -> None:
            vif = back.vif_for_port(port)
            if vif is None:
                return

            def echo(batch: TxBatch) -> None:
                n = batch.vec.delivered
                if n:
                    per_vif[vif.name] = per_vif.get(vif.name, 0) + n
                    owed[vif.name] = owed.get(vif.name, 0) + n

            vif.on_event(port, echo)
            pay(vif)
            vif.flush_tx_responses()

        loop = DomainLoop(platform, xs, back.on_watch, on_event)
        deadline = time.monotonic() + job.deadline_s + 20
        seen: set[str] = set()
        try:
            back.start()
            while time.monotonic() < deadline:
                loop.run_once(0.01 if any(owed.values()) else 0.05)
                for vif in back.vifs.values():
                    if owed.get(vif.name) or (vif.rx is not None and vif.rx.queued):
                        pay(vif)
                vifs = list(back.vifs.values())
                seen |= {v.name for v in vifs if v.connected}
                now = rss_parts()
                if now["rss_mib"] > peak["rss_mib"]:
                    peak = now
                if len(seen) >= job.guests and all(v.dev.state == XenbusState.Closed for v in vifs):
                    break
            back.stop()
            return {**peak, "per_vif": per_vif, "connected": len(seen)}
        finally:
            loop.close()


_ECHO: dict[tuple[int, int], tuple[bytes, Any, int]] = {}


def _echo_frames(n: int, size: int) -> tuple[bytes, Any, int]:
    key = (n, size)
    if key not in _ECHO:
        frames, lens = frame_batch(n, size, GUEST_MAC, BACKEND_MAC)
        _ECHO[key] = (frames, lens, n)
    return _ECHO[key]


def run_scale(job: ScaleJob) -> dict[str, Any]:
    with SimToolstack("xennet-scale-") as ts:
        assert ts.xs is not None
        ts.domain(BACKEND, job.backend_frames)
        paths = [VifPaths(d, BACKEND, 0) for d in range(1, job.guests + 1)]
        for p in paths:
            ts.domain(p.frontend_domid, 4096)
            ts.attach(p)
        back = ts.start("scale-backend", scale_backend, ts.path, job)
        guests = [
            ts.start(f"scale-guest-{p.frontend_domid}", scale_guest, ts.path, p.frontend_domid, p, job)
            for p in paths
        ]
        results = [g.result(job.deadline_s + 60) for g in guests]
        b = back.result(60)
        for p in paths:
            ts.detach(p)
            ts.xs.release(p.frontend_domid)
        every = all(r["sent"] == job.frames and r["got"] == job.frames for r in results)
        return {
            "guests": job.guests,
            "rss_mib": b["rss_mib"],
            "rss_parts": {k: b[k] for k in RSS_FIELDS.values() if k != "rss_mib"},
            "ok": every and len(b["per_vif"]) == job.guests,
            "per_guest": results,
            "backend": b,
            "accounting_after": ts.accounting(BACKEND, *(p.frontend_domid for p in paths)),
        }
