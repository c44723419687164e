"""``xennet link``: a paravirtual link between two network namespaces.

A "guest" namespace holds a TAP served by a netfront process; a "host" namespace holds a
TAP served by the netback process; xenstored and the handshake run between them.  The
Linux kernel's own traffic (TCP with GSO and checksum offload) crosses netfront -> rings and
grants -> netback, and back.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..netback.backend import Netback
from ..netback.interface import NetbackConfig, Vif
from ..netfront.device import Netfront, NetfrontConfig
from ..packet.skb import Skb
from ..xenbus.paths import VifPaths
from ..xenbus.toolstack import VifSpec
from .loop import DomainLoop, shut_down_netfront
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


class _Capture:
    """``FILE`` gets frames as the ring carried them (GSO frames whole); ``FILE.segments.pcap``
    gets them as they left the wire side (GSO frames segmented, checksums completed)."""

    def __init__(self, path: str) -> None:
        from ..packet.skb import HeapPages
        from ..ports.pcap import PcapWriter

        self.ring = PcapWriter(path)
        self.wire = PcapWriter(f"{path}.segments.pcap")
        self._scratch = HeapPages()

    def record(self, skb: Skb) -> None:
        self.ring.write_skb(skb)
        self.wire.write_segmented(skb, self._scratch)

    def close(self) -> None:
        self.ring.close()
        self.wire.close()


def _pcap(path: str | None) -> _Capture | None:
    return _Capture(path) if path else None


def _record(pcap: _Capture | None, skb: Skb) -> None:
    if pcap is not None:
        pcap.record(skb)


def link_guest(world_path: str, paths: VifPaths, addr: LinkAddresses, cfg: LinkConfig) -> dict[str, Any]:
    """The guest domain: a TAP in the guest namespace, served by netfront."""
    from ..ports.netns import Netns
    from ..ports.tap import Tap, TapGone

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tears down in order
    ns = Netns(addr.guest_ns)
    pcap = _pcap(cfg.pcap_guest)
    with open_domain(world_path, GUEST) as (platform, xs):
        tap = Tap.open(GUEST_TAP, netns=addr.guest_ns, offloads=cfg.offloads, mtu=cfg.mtu)
        front = Netfront.for_vif(platform, xs, paths, cfg.front)
        held: list[Skb] = []  # a frame read while the tx queue was stopped
        gone = ""

        def on_event(port: int) -> None:
            for skb in front.on_event(port):
                _record(pcap, skb)
                try:
                    tap.write_skb(skb)
                finally:
                    skb.release()
            pump_tap()

        def pump_tap() -> None:
            nonlocal gone
            if not front.connected or tap.closed:
                return
            try:
                while True:
                    skb = held.pop() if held else tap.read_skb(front.memory)
                    if skb is None:
                        break
                    _record(pcap, skb)
                    if not front.send(skb):
                        held.append(skb)
                        break
            except TapGone as exc:
                gone = str(exc)
                tap.close()
            front.flush()

        loop = DomainLoop(platform, xs, front.on_watch, on_event)
        try:
            ns.set_mtu(GUEST_TAP, cfg.mtu)
            ns.add_address(GUEST_TAP, addr.guest_ip, addr.prefix)
            ns.link_up(GUEST_TAP)
            front.start()
            loop.add_reader(tap.fileno(), pump_tap)
            while not stop and not front.broken and not gone:
                loop.run_once(0.2)
                if front.connected and xs.try_read(f"{paths.frontend}/link-ready") is None:
                    xs.write(f"{paths.frontend}/link-ready", "1")
            for skb in held:
                skb.release()
            shut_down_netfront(front, loop)
            return {
                "role": "guest",
                "state": front.dev.state.name,
                "tap_gone": gone,
                "stats": front.stats.as_dict(),
                "tap": asdict(tap.stats),
                "accounting": asdict(platform.accounting()),
            }
        finally:
            loop.close()
            tap.close()
            if pcap is not None:
                pcap.close()
            ns.close()


def link_backend(world_path: str, addr: LinkAddresses, cfg: LinkConfig) -> dict[str, Any]:
    """The driver domain: netback, with each vif's frames going to a TAP in the host namespace."""
    from ..ports.netns import Netns
    from ..ports.tap import Tap, TapGone

    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ns = Netns(addr.host_ns)
    pcap = _pcap(cfg.pcap_host)
    with open_domain(world_path, BACKEND) as (platform, xs):
        back = Netback(platform, xs, cfg.back)
        taps: dict[str, Any] = {}
        info: dict[str, Any] = {}

        def tap_for(vif: Vif) -> Any:
            tap = taps.get(vif.name)
            if tap is None and vif.connected:
                tap = Tap.open(HOST_TAP, netns=addr.host_ns, offloads=cfg.offloads, mtu=cfg.mtu)
                ns.set_mtu(HOST_TAP, cfg.mtu)
                ns.add_address(HOST_TAP, addr.host_ip, addr.prefix)
                ns.link_up(HOST_TAP)
                taps[vif.name] = tap
                loop.add_reader(tap.fileno(), functools.partial(from_tap, vif, tap))
            return tap

        def from_tap(vif: Vif, tap: Any) -> None:
            try:
                while vif.connected:
                    skb = tap.read_skb(vif.memory)
                    if skb is None:
                        break
                    _record(pcap, skb)
                    vif.send_to_guest(skb)
                vif.kick_rx()
            except TapGone as exc:
                # the TAP vanished: this vif goes down cleanly, the others go on
                loop.remove_reader(tap.fileno())
                tap.close()
                vif.fail("tap_gone", f"host TAP is gone: {exc}")

        def on_event(port: int) -> None:
            vif = back.vif_for_port(port)
            if vif is None:
                return
            tap = tap_for(vif)
            for skb in vif.on_event(port):
                _record(pcap, skb)
                try:
                    if tap is not None and not tap.closed:
                        tap.write_skb(skb)
                finally:
                    skb.release()
            vif.flush_tx_responses()

        loop = DomainLoop(platform, xs, back.on_watch, on_event)
        try:
            back.start()
            while not stop:
                loop.run_once(0.2)
                for vif in back.vifs.values():
                    tap_for(vif)
                    vif.kick_rx()
                    vif.flush_tx_responses()
                    info[vif.name] = {"state": vif.dev.state.name, "stats": vif.stats.as_dict()}
            back.stop()
            return {
                "role": "backend",
                "vifs": info,
                "taps": {k: asdict(t.stats) for k, t in taps.items()},
                "accounting": asdict(platform.accounting()),
            }
        finally:
            loop.close()
            for tap in taps.values():
                tap.close()
            if pcap is not None:
                pcap.close()
            ns.close()


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
