"""``xennet link --check``: ping and iperf3 across the xennet link and, in the same run, across
a plain veth pair between two other namespaces, so the figures sit side by side."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class PathFigures:
    rtt_ms: float | None
    gbit_s: float | None
    error: str = ""


REFERENCE = "veth"  # the path every other is compared with


@dataclass(frozen=True)
class Spread:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, xs: list[float]) -> Spread | None:
        return cls(statistics.median(xs), min(xs), max(xs)) if xs else None


@dataclass(frozen=True)
class PathSummary:
    """One path's runs: the spread of each figure, its errors, and its median Gbit/s over the
    reference path's (None when either has no throughput figure)."""

    gbit: Spread | None
    rtt_ms: Spread | None
    errors: list[str]
    vs_reference: float | None


def summarize(rows: dict[str, list[PathFigures]], reference: str = REFERENCE) -> dict[str, PathSummary]:
    """Each path's runs summarized; runs that measured nothing (None) are left out of a spread."""

    def gbit(figs: list[PathFigures]) -> Spread | None:
        return Spread.of([f.gbit_s for f in figs if f.gbit_s is not None])

    ref = gbit(rows.get(reference, []))
    out: dict[str, PathSummary] = {}
    for name, figs in rows.items():
        g = gbit(figs)
        out[name] = PathSummary(
            gbit=g,
            rtt_ms=Spread.of([f.rtt_ms for f in figs if f.rtt_ms is not None]),
            errors=[f.error for f in figs if f.error],
            vs_reference=g.median / ref.median if g and g.median and ref and ref.median else None,
        )
    return out


def check_json(rows: dict[str, list[PathFigures]], runs: int, seconds: int, poll_us: int) -> dict[str, Any]:
    """``xennet link --check --json``: each path's median, min and max, and the runs' errors."""

    def spread(s: Spread | None) -> dict[str, float] | None:
        return None if s is None else {"median": s.median, "min": s.min, "max": s.max}

    paths = {
        name: {"gbit": spread(p.gbit), "rtt_ms": spread(p.rtt_ms), "errors": p.errors}
        for name, p in summarize(rows).items()
    }
    return {"runs": runs, "seconds": seconds, "poll_us": poll_us, "paths": paths}


def _exec(ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def measure(
    client_ns: str,
    server_ns: str,
    server_ip: str,
    seconds: float = 3,
    reverse: bool = False,
    *,
    iperf: bool = True,
    pings: int = 10,
) -> PathFigures:
    """Ping (``pings`` of them, 0.05 s apart: the idle RTT, median), then iperf3 TCP for
    ``seconds`` (``reverse``: the server sends)."""
    ping = _exec(client_ns, "ping", "-c", str(pings), "-i", "0.05", "-W", "2", server_ip, timeout=30)
    times = sorted(float(t) for t in re.findall(r"time=([\d.]+) ms", ping.stdout))
    rtt = times[len(times) // 2] if times and ping.returncode == 0 else None
    if not iperf:
        return PathFigures(rtt, None, "" if rtt is not None else f"ping failed: {ping.stdout[-200:]}")
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        argv = ["iperf3", "-c", server_ip, "-t", str(seconds), "-J"] + (["-R"] if reverse else [])
        r = _exec(client_ns, *argv, timeout=seconds + 30)
        gbit = None
        err = ""
        try:
            data: dict[str, Any] = json.loads(r.stdout)
            if "error" in data:
                err = str(data["error"])
            else:
                gbit = data["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError):
            err = (r.stderr or r.stdout)[-300:]
    finally:
        server.kill()
        server.wait(5)
    if rtt is None:
        err = err or f"ping failed: {ping.stdout[-200:]}{ping.stderr[-200:]}"
    return PathFigures(rtt, gbit, err)


class VethPair:
    """Two namespaces joined by a veth pair: the reference path measured in the same run."""

    def __init__(self, subnet: int, n: int, mtu: int = 1500) -> None:
        from ..ports.netns import Netns

        self.a = Netns.create(prefix="xnva")
        self.b = Netns.create(prefix="xnvb")
        try:
            self.a.create_veth("va", "vb", self.b)
            self.ip_a, self.ip_b = f"10.{subnet}.{n}.1", f"10.{subnet}.{n}.2"
            for ns, dev, ip in ((self.a, "va", self.ip_a), (self.b, "vb", self.ip_b)):
                ns.set_mtu(dev, mtu)
                ns.add_address(dev, ip, 24)
                ns.link_up(dev)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.a.delete()
        self.b.delete()
