"""``xennet link``: a paravirtual link between two network namespaces.

A "guest" namespace holds a TAP served by a netfront process; a "host" namespace holds a
TAP served by the netback process; xenstored and the handshake run between them.  The
Linux kernel's own traffic (TCP with GSO and checksum offload) crosses netfront -> rings and
grants -> netback, and back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..netback.backend import Netback
from ..netback.interface import NetbackConfig
from ..netfront.device import Netfront, NetfrontConfig
from ..xenbus.paths import VifPaths
from ..xenbus.toolstack import VifSpec
from .serve import Capture, TapSpec, serve_netback, serve_netfront
from .toolstack import SimToolstack, open_domain

BACKEND, GUEST = 0, 1
GUEST_TAP, HOST_TAP = "xn0", "xnb0"


@dataclass(frozen=True)
class LinkConfig:
    mac: str = "00:16:3e:00:00:01"
    mtu: int = 1500
    offloads: bool = True
    subnet: int = 213  # 10.<subnet>.<n>.0/24; n is picked per run
    front: NetfrontConfig = field(default_factory=NetfrontConfig)
    back: NetbackConfig = field(default_factory=NetbackConfig)
    pcap_guest: str | None = None
    pcap_host: str | None = None
    queues: int = 1
    poll_us: int = 0  # busy-poll each domain's rings and descriptors this long before sleeping


def preflight(check: bool = False) -> list[str]:
    """What this machine lacks for a link, one line each (empty: good to go)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: creating network namespaces and TAP devices needs CAP_NET_ADMIN (run as root)")
    if not os.path.exists("/dev/net/tun"):
        missing.append(
            "/dev/net/tun: the tun driver is not available (modprobe tun, or a container without it)"
        )
    else:
        try:
            os.close(os.open("/dev/net/tun", os.O_RDWR))
        except OSError as exc:
            missing.append(f"/dev/net/tun: cannot open it ({exc.strerror})")
    try:
        import pyroute2  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        missing.append("pyroute2: pip install pyroute2")
    if check:
        for tool, pkg in (("iperf3", "iperf3"), ("ping", "iputils-ping"), ("ip", "iproute2")):
            if shutil.which(tool) is None:
                missing.append(f"{tool}: apt-get install {pkg}")
    return missing


@dataclass
class LinkAddresses:
    guest_ns: str
    host_ns: str
    guest_ip: str
    host_ip: str
    prefix: int = 24


def _stop_on_sigterm() -> Callable[[], bool]:
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tears down in order
    return lambda: stop


def link_guest(world_path: str, paths: VifPaths, addr: LinkAddresses, cfg: LinkConfig) -> dict[str, Any]:
    """The guest domain: a TAP in the guest namespace, served by netfront."""
    should_stop = _stop_on_sigterm()
    pcap = Capture(cfg.pcap_guest) if cfg.pcap_guest else None
    spec = TapSpec(GUEST_TAP, addr.guest_ns, f"{addr.guest_ip}/{addr.prefix}", cfg.mtu, cfg.offloads)
    try:
        with open_domain(world_path, GUEST) as (platform, xs):
            front = Netfront.for_vif(platform, xs, paths, cfg.front)

            def ready() -> None:
                xs.write(f"{paths.frontend}/link-ready", "1")

            res = serve_netfront(
                platform, xs, front, spec, should_stop, pcap=pcap, on_connected=ready, poll_us=cfg.poll_us
            )
            return {**res, "role": "guest"}
    finally:
        if pcap is not None:
            pcap.close()


def link_backend(world_path: str, addr: LinkAddresses, cfg: LinkConfig) -> dict[str, Any]:
    """The driver domain: netback, with each vif's frames going to a TAP in the host namespace."""
    should_stop = _stop_on_sigterm()
    pcap = Capture(cfg.pcap_host) if cfg.pcap_host else None
    spec = TapSpec(HOST_TAP, addr.host_ns, f"{addr.host_ip}/{addr.prefix}", cfg.mtu, cfg.offloads)
    try:
        with open_domain(world_path, BACKEND) as (platform, xs):
            back = Netback(platform, xs, cfg.back)
            poll = cfg.poll_us
            res = serve_netback(platform, xs, back, lambda vif: spec, should_stop, pcap=pcap, poll_us=poll)
            return {**res, "role": "backend"}
    finally:
        if pcap is not None:
            pcap.close()


class Link:
    """The whole link: namespaces, toolstack, both domain processes.  ``close`` undoes all."""

    def __init__(self, cfg: LinkConfig) -> None:
        from ..ports.netns import Netns

        if cfg.queues != 1:
            raise ValueError("queues: only 1 queue per vif is built so far")
        missing = preflight()
        if missing:
            raise RuntimeError("xennet link cannot run here:\n  " + "\n  ".join(missing))
        self.cfg = cfg
        n = os.getpid() % 250 + 1
        self.guest_ns = Netns.create(prefix="xng")
        self.host_ns = Netns.create(prefix="xnh")
        self.addr = LinkAddresses(
            self.guest_ns.name, self.host_ns.name, f"10.{cfg.subnet}.{n}.2", f"10.{cfg.subnet}.{n}.1"
        )
        self.ts: SimToolstack | None = None
        self.result: dict[str, Any] = {}
        try:
            self.ts = SimToolstack("xennet-link-")
            self.ts.domain(BACKEND, 16384)
            self.ts.domain(GUEST, 16384)
            self.paths = VifPaths(GUEST, BACKEND, 0)
            self.ts.attach(self.paths, VifSpec(mac=cfg.mac, mtu=cfg.mtu))
            self.backend = self.ts.start("link-backend", link_backend, self.ts.path, self.addr, cfg)
            self.guest = self.ts.start("link-guest", link_guest, self.ts.path, self.paths, self.addr, cfg)
            self._wait_ready(30)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.ts is not None and self.ts.xs is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ts.xs.try_read(f"{self.paths.frontend}/link-ready") and HOST_TAP in self.host_ns.links():
                return
            for p in (self.guest, self.backend):
                if p.poll():
                    p.result(1)  # raises with the child's traceback
            time.sleep(0.05)
        raise TimeoutError("the link did not come up in time")

    def exec(self, ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
        )

    def commands(self) -> list[str]:
        a = self.addr
        return [
            f"ip netns exec {a.host_ns} iperf3 -s -1 -B {a.host_ip} &",
            f"ip netns exec {a.guest_ns} iperf3 -c {a.host_ip} -t 5",
            f"ip netns exec {a.guest_ns} ping -c 3 {a.host_ip}",
        ]

    def close(self) -> dict[str, Any]:
        """Stop both domains in order, collect their counters, remove everything."""
        if self.ts is not None:
            for p in (getattr(self, "guest", None), getattr(self, "backend", None)):
                if p is not None and p.proc.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)
                    try:
                        self.result[p.name] = p.result(20)
                    except Exception as exc:  # report, keep tearing down
                        self.result[p.name] = {"error": str(exc)}
            try:
                if self.ts.xs is not None:
                    self.ts.detach(self.paths)
                    self.ts.xs.release(GUEST)
                self.result["accounting_after"] = self.ts.accounting(BACKEND, GUEST)
            except Exception as exc:
                self.result["accounting_after"] = {"error": str(exc)}
            self.ts.close()
            self.ts = None
        for ns in (getattr(self, "guest_ns", None), getattr(self, "host_ns", None)):
            if ns is not None:
                ns.delete()
        return self.result

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
