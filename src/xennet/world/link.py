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
from ..xenbus.states import XenbusState
from ..xenbus.toolstack import VifSpec, attach_backend
from .host.serve import Capture, TapSpec, serve_netback, serve_netfront
from .sim.procs import DomainProcess
from .sim.toolstack import SimToolstack, open_domain

BACKEND, GUEST = 0, 1
GUEST_TAP, HOST_TAP = "xn0", "xnb0"
HOST_MAC = "fe:ff:ff:ff:ff:ff"  # what Linux xen-netback gives a vif's dom0 side


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

    def __post_init__(self) -> None:
        VifSpec(mac=self.mac, mtu=self.mtu)  # the vif's own rules for mac= and mtu=
        if self.queues != 1:
            raise ValueError(f"queues={self.queues}: only queues=1 is built so far")
        if not 0 <= self.poll_us <= 1_000_000:
            raise ValueError(f"poll_us={self.poll_us}: microseconds, 0 to 1000000")
        if not 0 <= self.subnet <= 255:
            raise ValueError(f"subnet={self.subnet}: the second octet of 10.x.n.0/24, 0 to 255")


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
    spec = TapSpec(
        GUEST_TAP, addr.guest_ns, f"{addr.guest_ip}/{addr.prefix}", cfg.mtu, cfg.offloads, mac=cfg.mac
    )
    try:
        with open_domain(world_path, paths.frontend_domid) as (platform, xs):
            front = Netfront.for_vif(platform, xs, paths, cfg.front)

            def ready() -> None:
                xs.write(f"{paths.frontend}/link-ready", "1")

            res = serve_netfront(
                platform,
                xs,
                front,
                spec,
                should_stop,
                pcap=pcap,
                on_connected=ready,
                poll_us=cfg.poll_us,
                reconnect=True,  # a restarted backend gets the same guest NIC back
            )
            return {**res, "role": "guest"}
    finally:
        if pcap is not None:
            pcap.close()


def link_backend(world_path: str, addr: LinkAddresses, cfg: LinkConfig) -> dict[str, Any]:
    """The driver domain: netback, with each vif's frames going to a TAP in the host namespace."""
    should_stop = _stop_on_sigterm()
    pcap = Capture(cfg.pcap_host) if cfg.pcap_host else None
    # the same TAP every incarnation: name, address, MAC, offloads; the host's routes come back
    spec = TapSpec(
        HOST_TAP, addr.host_ns, f"{addr.host_ip}/{addr.prefix}", cfg.mtu, cfg.offloads, mac=HOST_MAC
    )
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
    """The whole link: namespaces, toolstack, both domain processes.  ``close`` undoes all.

    ``restart_backend`` and ``restart_guest`` do the toolstack's part when a domain dies
    (reap it, tidy xenstore) and start a new one in its place."""

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
        self.guest_domid = GUEST
        self.spec = VifSpec(mac=cfg.mac, mtu=cfg.mtu)
        try:
            self.ts = SimToolstack("xennet-link-")
            self.ts.domain(BACKEND, 16384)
            self.ts.domain(GUEST, 16384)
            self.paths = VifPaths(GUEST, BACKEND, 0)
            self.ts.attach(self.paths, self.spec)
            self.backend = self._start_backend()
            self.guest = self._start_guest()
            self._wait_ready(30)
        except BaseException:
            self.close()
            raise

    def _start_backend(self) -> DomainProcess:
        assert self.ts is not None
        return self.ts.start("link-backend", link_backend, self.ts.path, self.addr, self.cfg)

    def _start_guest(self) -> DomainProcess:
        assert self.ts is not None
        return self.ts.start("link-guest", link_guest, self.ts.path, self.paths, self.addr, self.cfg)

    def _wait_ready(self, timeout: float) -> None:
        """Until both ends say Connected and the host TAP carries its address."""
        assert self.ts is not None and self.ts.xs is not None
        xs = self.ts.xs
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            connected = str(int(XenbusState.Connected))
            if (
                xs.try_read(f"{self.paths.frontend}/state") == connected
                and xs.try_read(f"{self.paths.backend}/state") == connected
                and xs.try_read(f"{self.paths.frontend}/link-ready")
                and self._has_address(self.host_ns, HOST_TAP, self.addr.host_ip)
                and self._has_address(self.guest_ns, GUEST_TAP, self.addr.guest_ip)
            ):
                return
            for p in (self.guest, self.backend):
                if p.poll():
                    p.result(1)  # raises with the child's traceback
            time.sleep(0.02)
        raise TimeoutError("the link did not come up in time")

    @staticmethod
    def _has_address(ns: Any, ifname: str, ip: str) -> bool:
        try:
            index = ns.link_index(ifname)
        except OSError:
            return False
        return any(a.get_attr("IFA_ADDRESS") == ip for a in ns.ipr().get_addr(index=index))

    def _kill(self, p: DomainProcess) -> None:
        """kill -9, and reap it: its fds (TAP, xenstore connection) close as the kernel says."""
        if p.proc.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGKILL)
        p.proc.join(10)
        if p.proc.is_alive():
            raise TimeoutError(f"{p.name} survived SIGKILL")
        assert self.ts is not None
        if p in self.ts.procs:
            self.ts.procs.remove(p)

    def kill_backend(self) -> None:
        self._kill(self.backend)

    def kill_guest(self) -> None:
        self._kill(self.guest)

    def restart_backend(self, timeout: float = 30) -> float:
        """The driver domain died (or is killed now): reap it as the hypervisor and toolstack
        do -- its mappings of the guest's grants and its ports go, its device directory is
        removed (the guest's netfront closes) -- then build a new driver domain and give it the
        vif again; the guest reconnects.  Returns the seconds until both ends are Connected."""
        assert self.ts is not None and self.ts.world is not None and self.ts.xs is not None
        t0 = time.monotonic()
        self._kill(self.backend)
        if self.ts.world.domain_exists(BACKEND):  # not reaped yet
            self.ts.world.destroy_domain(BACKEND)
        if self.ts.xs.try_read(self.paths.backend) is not None:
            self.ts.xs.rm(self.paths.backend)
        self.ts.domain(BACKEND, 16384)
        attach_backend(self.ts.xs, self.paths, self.spec)
        self.backend = self._start_backend()
        self._wait_ready(timeout)
        return time.monotonic() - t0

    def wait_released(self, domid: int, timeout: float = 20) -> dict[str, int]:
        """Until the backend holds nothing of ``domid``'s (after its @releaseDomain): domain
        0's maps and ports back to zero, and the vif Closed.  Returns domain 0's accounting."""
        assert self.ts is not None and self.ts.xs is not None
        xs, vif = self.ts.xs, VifPaths(domid, BACKEND, 0)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            acct = self.ts.accounting(BACKEND)[BACKEND]
            if not acct["maps"] and not acct["ports"] and xs.try_read(f"{vif.backend}/state") == "6":
                return acct
            if self.backend.poll():
                self.backend.result(1)
            time.sleep(0.02)
        raise TimeoutError(f"the backend still holds {self.ts.accounting(BACKEND)} of domain {domid}")

    def restart_guest(self, timeout: float = 30) -> float:
        """The guest died (or is killed now): release its domain (@releaseDomain: the backend
        frees the vif), wait for the backend to let go, reap it, remove its vif; then a new
        guest domain (a new domid, as xl create gives) gets a new vif with the same MAC and
        address.  Returns the seconds until both ends are Connected."""
        assert self.ts is not None and self.ts.world is not None and self.ts.xs is not None
        t0 = time.monotonic()
        self._kill(self.guest)
        old = self.guest_domid
        if self.ts.xs.is_domain_introduced(old):
            self.ts.xs.release(old)
        self.wait_released(old, timeout)
        self.ts.world.destroy_domain(old)
        self.ts.detach(self.paths)
        self.guest_domid = old + 1
        self.paths = VifPaths(self.guest_domid, BACKEND, 0)
        self.ts.domain(self.guest_domid, 16384)
        self.ts.attach(self.paths, self.spec)
        self.guest = self._start_guest()
        self._wait_ready(timeout)
        return time.monotonic() - t0

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
                if p is not None and p.proc.is_alive():
                    self.result[p.name] = p.stop()
            try:
                if self.ts.xs is not None:
                    self.ts.detach(self.paths)
                    self.ts.xs.release(self.guest_domid)
            except Exception as exc:  # xenstored may be gone: the domains' files still tell
                self.result["detach_error"] = str(exc)
            try:
                self.result["accounting_after"] = self.ts.accounting(BACKEND, self.guest_domid)
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
