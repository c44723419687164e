"""``xennet switch N``: seed 003 as a user runs it.

One driver domain serves N guests.  Each guest is a process whose netfront serves a TAP in
the guest's own namespace; the driver domain joins their vifs with a learning bridge
(``ports/bridge.py``), so guest-to-guest frames never touch a host interface.  With
``data=map`` a frame from guest A is grant-copied from A's grant straight into guest B's rx
buffer: the vifs' ``rx_bytes_forwarded`` counts those bytes, ``rx_bytes_staged`` what went
through backend memory.  ``LinuxBridge`` is the reference measured in the same run: the same
namespaces' worth of veths on a kernel bridge.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..netback.backend import Netback
from ..netback.interface import NetbackConfig
from ..netback.tx import TxLimits
from ..netfront.device import NetfrontConfig
from ..ports.bridge import LearningBridge
from ..xenbus.paths import VifPaths
from ..xenbus.states import XenbusState
from ..xenbus.toolstack import VifSpec
from .host.serve import serve_bridge
from .link import LinkAddresses, LinkConfig, _stop_on_sigterm, link_guest, preflight
from .sim.procs import DomainProcess
from .sim.toolstack import SimToolstack, open_domain

BACKEND = 0
MAX_GUESTS = 16


@dataclass(frozen=True)
class SwitchConfig:
    guests: int = 3
    mtu: int = 1500
    offloads: bool = True
    subnet: int = 214  # 10.<subnet>.<n>.0/24; n is picked per run
    front: NetfrontConfig = field(default_factory=NetfrontConfig)
    # data=map: forwarding by grant copy from the sender's grant (seed 003)
    back: NetbackConfig = field(default_factory=lambda: NetbackConfig(tx_limits=TxLimits(data="map")))
    poll_us: int = 0
    nr_frames: int = 16384

    def __post_init__(self) -> None:
        if not 2 <= self.guests <= MAX_GUESTS:
            raise ValueError(f"switch: guests={self.guests}: 2 to {MAX_GUESTS}")
        if not 1 <= self.subnet <= 254:
            raise ValueError(f"switch: subnet={self.subnet}: 1 to 254")

    def mac(self, i: int) -> str:
        return f"00:16:3e:00:01:{i + 1:02x}"


def switch_backend(world_path: str, cfg: SwitchConfig) -> dict[str, Any]:
    """The driver domain: netback, and a learning bridge between its vifs."""
    should_stop = _stop_on_sigterm()
    with open_domain(world_path, BACKEND) as (platform, xs):
        back = Netback(platform, xs, cfg.back)
        res = serve_bridge(platform, xs, back, LearningBridge(), should_stop, poll_us=cfg.poll_us)
        return {**res, "role": "backend"}


@dataclass
class SwitchGuest:
    domid: int
    paths: VifPaths
    addr: LinkAddresses
    mac: str
    proc: DomainProcess | None = None


class Switch:
    """The whole switch: N namespaces, the toolstack, N + 1 domain processes.  ``close``
    undoes all of it and returns each domain's report."""

    def __init__(self, cfg: SwitchConfig) -> None:
        from ..ports.netns import Netns

        missing = preflight()
        if missing:
            raise RuntimeError("xennet switch cannot run here:\n  " + "\n  ".join(missing))
        self.cfg = cfg
        self.ts: SimToolstack | None = None
        self.spaces: list[Any] = []
        self.guests: list[SwitchGuest] = []
        self.backend: DomainProcess | None = None
        self.result: dict[str, Any] = {}
        n = os.getpid() % 250 + 1
        try:
            self.ts = SimToolstack("xennet-switch-")
            self.ts.domain(BACKEND, cfg.nr_frames)
            for i in range(cfg.guests):
                ns = Netns.create(prefix=f"xns{i}")
                self.spaces.append(ns)
                domid = i + 1
                g = SwitchGuest(
                    domid,
                    VifPaths(domid, BACKEND, 0),
                    LinkAddresses(ns.name, "", f"10.{cfg.subnet}.{n}.{i + 1}", ""),
                    cfg.mac(i),
                )
                self.ts.domain(domid, cfg.nr_frames)
                self.ts.attach(g.paths, VifSpec(mac=g.mac, mtu=cfg.mtu))
                self.guests.append(g)
            self.backend = self.ts.start("switch-backend", switch_backend, self.ts.path, cfg)
            for g in self.guests:
                link = LinkConfig(
                    mac=g.mac, mtu=cfg.mtu, offloads=cfg.offloads, front=cfg.front, poll_us=cfg.poll_us
                )
                name = f"switch-guest{g.domid}"
                g.proc = self.ts.start(name, link_guest, self.ts.path, g.paths, g.addr, link)
            self._wait_ready(30 + 5 * cfg.guests)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.ts is not None and self.ts.xs is not None
        xs = self.ts.xs
        connected = str(int(XenbusState.Connected))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(
                xs.try_read(f"{g.paths.frontend}/state") == connected
                and xs.try_read(f"{g.paths.backend}/state") == connected
                and xs.try_read(f"{g.paths.frontend}/link-ready")
                for g in self.guests
            ):
                return
            for p in self._procs():
                if p.poll():
                    p.result(1)  # raises with the child's traceback
            time.sleep(0.02)
        raise TimeoutError("the switch did not come up in time")

    def _procs(self) -> list[DomainProcess]:
        procs = [g.proc for g in self.guests if g.proc is not None]
        return procs + ([self.backend] if self.backend is not None else [])

    def alive(self) -> bool:
        return all(p.proc.is_alive() for p in self._procs())

    def commands(self) -> list[str]:
        a, b = self.guests[0].addr, self.guests[1].addr
        return [
            f"ip netns exec {b.guest_ns} iperf3 -s -1 -B {b.guest_ip} &",
            f"ip netns exec {a.guest_ns} iperf3 -c {b.guest_ip} -t 5",
            *(f"ip netns exec {a.guest_ns} ping -c 3 {g.addr.guest_ip}" for g in self.guests[1:]),
        ]

    def close(self) -> dict[str, Any]:
        """Stop the guests, then the driver domain; collect their reports; remove everything."""
        if self.ts is not None:
            for p in self._procs():  # guests first: the backend sees each vif close
                if p.proc.is_alive():
                    self.result[p.name] = p.stop()
            try:
                if self.ts.xs is not None:
                    for g in self.guests:
                        self.ts.detach(g.paths)
                        self.ts.xs.release(g.domid)
            except Exception as exc:  # xenstored may be gone: the domains' files still tell
                self.result["detach_error"] = str(exc)
            try:
                self.result["accounting_after"] = self.ts.accounting(BACKEND, *(g.domid for g in self.guests))
            except Exception as exc:
                self.result["accounting_after"] = {"error": str(exc)}
            self.ts.close()
            self.ts = None
        for ns in self.spaces:
            ns.delete()
        self.spaces = []
        return self.result

    def __enter__(self) -> Switch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def forwarding(result: dict[str, Any]) -> dict[str, Any]:
    """The backend's seed-003 counters out of ``Switch.close()``'s report: bytes each vif
    received by grant copy from another guest's grant, bytes staged in backend memory."""
    back = result.get("switch-backend", {})
    per: dict[str, dict[str, int]] = {}
    for name, row in back.get("vifs", {}).items():
        st = row.get("stats", {})
        per[name] = {k: int(st.get(k, 0)) for k in ("rx_bytes_forwarded", "rx_bytes_staged", "rx_packets")}
    return {
        "vifs": per,
        "forwarded_bytes": sum(v["rx_bytes_forwarded"] for v in per.values()),
        "staged_bytes": sum(v["rx_bytes_staged"] for v in per.values()),
        "bridge": back.get("bridge", {}),
    }


class LinuxBridge:
    """The reference: N namespaces, each with a veth on one kernel bridge, in the same subnet
    scheme (another subnet, so the two never meet)."""

    def __init__(self, guests: int, subnet: int, n: int, mtu: int = 1500) -> None:
        from ..ports.netns import Netns

        self.spaces: list[Any] = []
        self.ips: list[str] = []
        try:
            self.hub = Netns.create(prefix="xnbr")
            self.spaces.append(self.hub)
            self.hub.ipr().link("add", ifname="br0", kind="bridge")
            self.hub.link_up("br0")
            for i in range(guests):
                ns = Netns.create(prefix=f"xnb{i}")
                self.spaces.append(ns)
                port = f"p{i}"
                self.hub.create_veth(port, "eth0", ns)
                self.hub.set_mtu(port, mtu)
                self.hub.set_master(port, "br0")
                self.hub.link_up(port)
                ip = f"10.{subnet}.{n}.{i + 1}"
                ns.set_mtu("eth0", mtu)
                ns.add_address("eth0", ip, 24)
                ns.link_up("eth0")
                self.ips.append(ip)
        except BaseException:
            self.close()
            raise

    def ns(self, i: int) -> str:
        return str(self.spaces[i + 1].name)

    def close(self) -> None:
        for ns in self.spaces:
            ns.delete()
        self.spaces = []


def check(sw: Switch, runs: int = 1, seconds: float = 3) -> dict[str, Any]:
    """``xennet switch --check``: ping between every pair of guests; iperf3 between the first
    two, both ways; the same across a Linux bridge of veths, in the same run.  Each figure is
    the median, minimum and maximum of ``runs`` runs.  ``verdict`` adds the forwarding
    counters from ``sw.close()``'s report."""
    from .linkcheck import PathFigures, Spread, measure, summarize

    cfg = sw.cfg
    ref = LinuxBridge(cfg.guests, (cfg.subnet + 1) % 254 + 1, os.getpid() % 250 + 1, cfg.mtu)
    pings: dict[str, float | None] = {}
    errors: list[str] = []
    rows: dict[bool, dict[str, list[PathFigures]]] = {False: {}, True: {}}  # by reverse
    try:
        for a in sw.guests:
            for b in sw.guests:
                if a is not b:
                    f = measure(a.addr.guest_ns, b.addr.guest_ns, b.addr.guest_ip, iperf=False, pings=3)
                    pings[f"{a.domid}->{b.domid}"] = f.rtt_ms
                    if f.error:
                        errors.append(f"ping {a.domid}->{b.domid}: {f.error}")
        first, second = sw.guests[0].addr, sw.guests[1].addr
        paths = {
            "xennet": (first.guest_ns, second.guest_ns, second.guest_ip),
            "linux bridge": (ref.ns(0), ref.ns(1), ref.ips[1]),
        }
        for _ in range(runs):
            for name, (client, server, ip) in paths.items():
                for reverse in (False, True):
                    f = measure(client, server, ip, seconds, reverse=reverse)
                    rows[reverse].setdefault(name, []).append(f)
                    if f.error:
                        errors.append(f"iperf3 {name}{' -R' if reverse else ''}: {f.error}")
    finally:
        ref.close()

    def spread(x: Spread | None) -> dict[str, float] | None:
        return None if x is None else {"median": x.median, "min": x.min, "max": x.max}

    fwd, rev = summarize(rows[False], "linux bridge"), summarize(rows[True], "linux bridge")
    return {
        "guests": cfg.guests,
        "data": cfg.back.tx_limits.data,
        "runs": runs,
        "seconds": seconds,
        "pings_ms": pings,
        "paths": {
            name: {
                "gbit": spread(fwd[name].gbit),
                "reverse_gbit": spread(rev[name].gbit),
                "rtt_ms": spread(fwd[name].rtt_ms),
            }
            for name in paths
        },  # fmt: skip
        "vs_linux_bridge": {"gbit": fwd["xennet"].vs_reference, "reverse_gbit": rev["xennet"].vs_reference},
        "errors": errors,
    }


def verdict(checked: dict[str, Any], closed: dict[str, Any]) -> dict[str, Any]:
    """Add the forwarding counters and what failed to ``check``'s figures: every ping
    answered, iperf3 moved data both ways, nothing held after teardown, and under data=map
    everything forwarded by grant copy with 0 bytes staged."""
    fwd = forwarding(closed)
    problems = list(checked["errors"])
    problems += [f"ping {pair}: no answer" for pair, rtt in checked["pings_ms"].items() if rtt is None]
    for key in ("gbit", "reverse_gbit"):
        if checked["paths"]["xennet"][key] is None:
            problems.append(f"xennet {key}: no iperf3 figure")
    if checked["data"] == "map":
        if fwd["staged_bytes"]:
            problems.append(f"data=map staged {fwd['staged_bytes']} bytes in backend memory")
        if not fwd["forwarded_bytes"]:
            problems.append("data=map forwarded nothing by grant copy")
    after = closed.get("accounting_after", {})
    held = {d: a for d, a in after.items() if not isinstance(a, dict) or any(a.values())}
    if held:
        problems.append(f"held after teardown: {held}")
    return {
        **checked,
        "forwarding": fwd,
        "held_after_teardown": after,
        "problems": problems,
        "ok": not problems,
    }
