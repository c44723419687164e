"""Benchmarks: each figure is a median over runs, beside a reference peer measured in the same run."""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass

from .demo import run_demo
from .procs import DomainProcess
from .traffic import make_frame


def _sink(sock: socket.socket, count: int) -> int:
    got = 0
    for _ in range(count):
        got += len(sock.recv(65536))
    sock.send(b"done")
    return got


def socketpair_pps(packets: int, seed: int) -> float:
    """The same frames between two processes over a Unix SOCK_SEQPACKET pair: the floor cost of
    moving a frame across a process boundary in Python, with no rings or grants."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    frames = [make_frame(seed, 1, i, b"\xff" * 6, b"\x00" * 6) for i in range(packets)]
    try:
        sink = DomainProcess("socketpair-sink", _sink, b, packets)
        b.close()
        t0 = time.perf_counter()
        for f in frames:
            a.send(f)
        a.recv(16)
        elapsed = time.perf_counter() - t0
        sink.result(60)
        return packets / elapsed
    finally:
        a.close()


@dataclass
class FirstPacketBench:
    runs: int
    packets: int
    tx_pps: list[float]
    rx_pps: list[float]
    peer_pps: list[float]

    @property
    def medians(self) -> dict[str, float]:
        return {
            "tx_pps": statistics.median(self.tx_pps),
            "rx_pps": statistics.median(self.rx_pps),
            "socketpair_pps": statistics.median(self.peer_pps),
        }


def first_packet(runs: int, packets: int) -> FirstPacketBench:
    tx: list[float] = []
    rx: list[float] = []
    peer: list[float] = []
    for i in range(runs):
        r = run_demo(packets, packets, seed=i + 1)
        if not r.ok:
            raise RuntimeError(f"run {i + 1} failed: {r.problems}")
        tx.append(r.pps("tx") or 0.0)
        rx.append(r.pps("rx") or 0.0)
        peer.append(socketpair_pps(packets, i + 1))
    return FirstPacketBench(runs, packets, tx, rx, peer)
