"""``xennet link --check``: ping and iperf3 across the xennet link and, in the same run, across
a plain veth pair between two other namespaces, so the figures sit side by side."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class PathFigures:
    rtt_ms: float | None
    gbit_s: float | None
    error: str = ""


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
