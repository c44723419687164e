"""Frames through the full protocol between two domain processes, counted at the far end.

A guest (netfront) and a driver domain (netback) run as two processes with xenstored; the
sender hands frames over in batches (``send_frames``), the receiver counts every frame that
comes out of its driver.  Each frame crosses the whole protocol: requests (or rx buffers)
on the ring, grant checks and copies, responses, completions.  The rate is the receiver's:
frames from its first to its last, over that time.

The peer is what two Python processes can move at all: the same frames over a Unix
``SOCK_SEQPACKET`` socketpair, timed the same way, once the receiving process is running.
"""

from __future__ import annotations

import socket
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from ..core import records as r
from ..netback.backend import Netback
from ..netback.interface import NetbackConfig
from ..netback.tx import TxBatch
from ..netfront.device import Netfront, NetfrontConfig
from ..world.host.loop import DomainLoop, shut_down_netfront
from ..world.sim.procs import DomainProcess
from ..world.sim.toolstack import SimToolstack, open_domain
from ..xenbus.paths import VifPaths
from ..xenbus.states import XenbusState

BACKEND, GUEST = 0, 1
BATCH = 256
DIRECTIONS = ("tx", "rx")  # guest -> backend, backend -> guest
MIN_FRAME = 18  # an Ethernet header and the frame's counter
GUEST_MAC = b"\x00\x16\x3e\x00\x00\x01"
BACKEND_MAC = b"\xfe\xff\xff\xff\xff\xff"


@dataclass(frozen=True)
class FlowJob:
    direction: str  # "tx": guest -> backend; "rx": backend -> guest
    frames: int
    size: int = 64
    gso_size: int = 0  # frames of ``size`` bytes marked as TCP GSO (bulk)
    front: NetfrontConfig = field(default_factory=NetfrontConfig)
    back: NetbackConfig = field(default_factory=NetbackConfig)
    poll_us: int = 0
    deadline_s: float = 60.0
    nr_frames: int = 16384

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r}: choose one of {', '.join(DIRECTIONS)}")
        if self.frames < 1:
            raise ValueError(f"frames={self.frames}: at least 1")
        if not MIN_FRAME <= self.size <= 65536:
            raise ValueError(f"size={self.size}: {MIN_FRAME} (a header and a counter) to 65536 bytes")
        if not 0 <= self.gso_size <= 65535:
            raise ValueError(f"gso_size={self.gso_size}: 0 (no GSO) to 65535")
        if not 0 <= self.poll_us <= 1_000_000:
            raise ValueError(f"poll_us={self.poll_us}: microseconds, 0 to 1000000")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s={self.deadline_s}: must be positive")


def frame_batch(n: int, size: int, dst: bytes, src: bytes) -> tuple[bytes, array[int]]:
    """``n`` frames of ``size`` bytes back to back (an Ethernet header, then a counter)."""
    body = bytes((i * 7) & 0xFF for i in range(max(0, size - MIN_FRAME)))
    frames = b"".join(dst + src + b"\x88\xb5" + struct.pack("!I", i) + body for i in range(n))
    return frames, array("I", [size] * n)


def tcp_batch(n: int, size: int, dst: bytes, src: bytes) -> tuple[bytes, array[int]]:
    """``n`` TCP/IPv4 frames of ``size`` bytes (a GSO packet's headers, then payload)."""
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, size - 14, 0, 0x4000, 64, 6, 0, b"\x0a\0\0\x01", b"\x0a\0\0\x02"
    )
    body = bytes((i * 7) & 0xFF for i in range(size - 54))
    frames = b"".join(
        dst
        + src
        + b"\x08\x00"
        + ip
        + struct.pack("!HHIIBBHHH", 5001, 80, i * (size - 54), 0, 0x50, 0x10, 65535, 0, 0)
        + body
        for i in range(n)
    )
    return frames, array("I", [size] * n)


def frames_for(job: FlowJob, dst: bytes, src: bytes) -> tuple[bytes, array[int], dict[str, int]]:
    """The batch a sender hands over, and how: GSO frames go as TCP with partial checksums."""
    if job.gso_size:
        frames, lens = tcp_batch(BATCH if job.size < 8192 else 16, job.size, dst, src)
        return frames, lens, {"flags": r.PKT_CSUM_PARTIAL, "gso_size": job.gso_size, "gso_type": 1}
    frames, lens = frame_batch(BATCH, job.size, dst, src)
    return frames, lens, {}


class Counter:
    """The receiver's count: frames, bytes, and when the first and the last came."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.first = 0.0
        self.last = 0.0

    def add(self, n: int, nbytes: int) -> None:
        if not n:
            return
        now = time.perf_counter()
        if not self.frames:
            self.first = now
        self.frames += n
        self.bytes += nbytes
        self.last = now

    def rate(self) -> float:
        """Frames per second from the first frame to the last."""
        if self.frames < 2 or self.last <= self.first:
            return 0.0
        return (self.frames - 1) / (self.last - self.first)

    def as_dict(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "seconds": self.last - self.first,
            "pps": self.rate(),
        }


def guest_program(world_path: str, paths: VifPaths, job: FlowJob) -> dict[str, Any]:
    with open_domain(world_path, GUEST) as (platform, xs):
        front = Netfront.for_vif(platform, xs, paths, job.front)
        got = Counter()

        def sink(vec: Any) -> None:
            got.add(vec.delivered, vec.delivered_bytes)

        def on_event(port: int) -> None:
            front.on_event(port, sink)

        def idle() -> bool:
            port = front.port_with_responses()
            if port is not None:
                on_event(port)
            return port is not None

        loop = DomainLoop(platform, xs, front.on_watch, on_event, idle=idle, poll_us=job.poll_us)
        deadline = time.monotonic() + job.deadline_s
        sent = 0
        t0 = t1 = 0.0
        try:
            front.start()
            while not front.connected and time.monotonic() < deadline:
                loop.run_once(0.05)
            xs.write(f"{paths.frontend}/bench-ready", "1")
            if job.direction == "tx":
                frames, lens, how = frames_for(job, BACKEND_MAC, GUEST_MAC)
                batch = len(lens)
                t0 = time.perf_counter()
                while sent < job.frames and time.monotonic() < deadline and front.connected:
                    k = front.send_frames(frames, lens, min(batch, job.frames - sent), **how)
                    sent += k
                    front.flush()
                    loop.run_once(0 if k else 0.01)
                while front.tx is not None and front.tx.in_flight and time.monotonic() < deadline:
                    loop.run_once(0.01)
                t1 = time.perf_counter()
            else:
                while got.frames < job.frames and time.monotonic() < deadline and front.connected:
                    loop.run_once(0.05)
            shut_down_netfront(front, loop)
            return {
                "sent": sent,
                "send_seconds": t1 - t0,
                "got": got.as_dict(),
                "stats": front.stats.as_dict(),
                "state": front.dev.state.name,
                "accounting": platform.accounting().__dict__,
                "busy_hits": loop.busy_hits,
            }
        finally:
            loop.close()


def backend_program(world_path: str, paths: VifPaths, job: FlowJob) -> dict[str, Any]:
    with open_domain(world_path, BACKEND) as (platform, xs):
        back = Netback(platform, xs, job.back)
        got = Counter()

        def sink(batch: TxBatch) -> None:
            got.add(batch.vec.delivered, batch.vec.delivered_bytes)

        def on_event(port: int) -> None:
            vif = back.vif_for_port(port)
            if vif is not None:
                vif.on_event(port, sink)
                vif.flush_tx_responses()

        def idle() -> bool:
            for vif in back.vifs.values():
                tx, rx = vif.tx, vif.rx
                if tx is not None and tx.ring.unconsumed_requests():
                    on_event(vif.tx_port)
                    return True
                if rx is not None and rx.queued and rx.ring.unconsumed_requests():
                    vif.kick_rx()
                    return True
            return False

        loop = DomainLoop(platform, xs, back.on_watch, on_event, idle=idle, poll_us=job.poll_us)
        deadline = time.monotonic() + job.deadline_s + 10
        queued = 0
        seen = ready = False
        frames, lens, how = frames_for(job, GUEST_MAC, BACKEND_MAC)
        batch = len(lens)
        try:
            back.start()
            while time.monotonic() < deadline:
                loop.run_once(0 if (job.direction == "rx" and seen and queued < job.frames) else 0.05)
                vifs = list(back.vifs.values())
                for vif in vifs:
                    if not vif.connected:
                        continue
                    seen = True
                    ready = ready or bool(xs.try_read(f"{paths.frontend}/bench-ready"))
                    if job.direction == "rx" and queued < job.frames and ready:
                        queued += vif.send_frames(frames, lens, min(batch, job.frames - queued), **how)
                        vif.kick_rx()
                if seen and all(v.dev.state == XenbusState.Closed for v in vifs):
                    break
            vif_stats = {v.name: v.stats.as_dict() for v in back.vifs.values()}
            back.stop()
            return {
                "queued": queued,
                "got": got.as_dict(),
                "vifs": vif_stats,
                "accounting": platform.accounting().__dict__,
                "busy_hits": loop.busy_hits,
            }
        finally:
            loop.close()


def run_flow(job: FlowJob) -> dict[str, Any]:
    """One run: a fresh world, both domains, the frames one way.  Returns both sides' reports
    and ``pps``/``gbit``: the receiver's rate."""
    with SimToolstack("xennet-bench-") as ts:
        assert ts.xs is not None
        ts.domain(BACKEND, job.nr_frames)
        ts.domain(GUEST, job.nr_frames)
        paths = VifPaths(GUEST, BACKEND, 0)
        ts.attach(paths)
        back = ts.start("bench-backend", backend_program, ts.path, paths, job)
        guest = ts.start("bench-guest", guest_program, ts.path, paths, job)
        g = guest.result(job.deadline_s + 30)
        b = back.result(30)
        ts.detach(paths)
        ts.xs.release(GUEST)
        recv = g["got"] if job.direction == "rx" else b["got"]
        return {
            "guest": g,
            "backend": b,
            "pps": recv["pps"],
            "gbit": recv["bytes"] * 8 / 1e9 / recv["seconds"] if recv["seconds"] else 0.0,
            "received": recv["frames"],
            "accounting_after": ts.accounting(BACKEND, GUEST),
        }


# --- the peer: a socketpair between two processes ----------------------------------------


def _sp_sink(sock: socket.socket, n: int) -> float:
    buf = bytearray(65536)
    sock.send(b"ready")
    sock.recv_into(buf)
    t0 = time.perf_counter()
    for _ in range(n - 1):
        sock.recv_into(buf)
    t1 = time.perf_counter()
    sock.send(b"done")
    return (n - 1) / (t1 - t0) if t1 > t0 else 0.0


def _sp_source(sock: socket.socket, n: int, size: int) -> int:
    frames, _lens = frame_batch(BATCH, size, BACKEND_MAC, GUEST_MAC)
    views = [frames[i * size : (i + 1) * size] for i in range(BATCH)]
    sock.recv(16)  # the sink is running
    for i in range(n):
        sock.send(views[i % BATCH])
    sock.recv(16)
    return n


def socketpair_pps(n: int, size: int = 64) -> float:
    """The same frames between two processes over a Unix SOCK_SEQPACKET pair, timed at the
    receiver from its first frame to its last, as xennet is."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sink = DomainProcess("socketpair-sink", _sp_sink, b, n)
        source = DomainProcess("socketpair-source", _sp_source, a, n, size)
        b.close()
        a.close()
        rate = float(sink.result(120))
        source.result(30)
        return rate
    finally:
        for s in (a, b):
            s.close()
