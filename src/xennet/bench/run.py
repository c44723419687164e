"""Run the benchmarks: each figure the median of several runs, each beside its peers from the
same run, labelled with the core that ran.  ``report`` is what ``--json`` writes."""

from __future__ import annotations

import os
import platform as host
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import core
from ..netback.interface import NetbackConfig
from ..world.link import LinkConfig
from .bulk import FRAME, MSS, memcpy_gbit
from .figures import Figure, ratio
from .small import FlowJob, run_flow, socketpair_pps

Progress = Callable[[str, float], None]  # (what is running, its share done 0..1)


@dataclass(frozen=True)
class BenchPlan:
    runs: int = 5
    small_frames: int = 500_000
    bulk_frames: int = 40_000
    rx_frames: int = 200_000
    link_seconds: float = 3.0
    scale_guests: int = 32
    scale_frames: int = 20_000
    poll_us: int = 200  # the busy-poll figures (also measured without: poll_us=0)
    rtt_poll_us: int = 100_000  # an RTT with both domains polling all the time
    quick: bool = False

    def __post_init__(self) -> None:
        for name in ("runs", "small_frames", "bulk_frames", "rx_frames", "scale_guests", "scale_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: at least 1")
        if self.link_seconds <= 0:
            raise ValueError(f"link_seconds={self.link_seconds}: must be positive")
        for name in ("poll_us", "rtt_poll_us"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ValueError(f"{name}={getattr(self, name)}: microseconds, 0 to 1000000")

    @classmethod
    def quick_plan(cls) -> BenchPlan:
        """Everything, small: a smoke test (CI) that asserts no targets."""
        return cls(
            runs=3, small_frames=30_000, bulk_frames=2_000, rx_frames=10_000, link_seconds=1.0,
            scale_guests=4, scale_frames=2_000, quick=True,
        )  # fmt: skip


@dataclass
class Report:
    core: str
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def fig(self, group: str, key: str, name: str, unit: str) -> Figure:
        g = self.figures.setdefault(group, {})
        if key not in g:
            g[key] = Figure(name, unit)
        return g[key]

    def median(self, group: str, key: str) -> float:
        f = self.figures.get(group, {}).get(key)
        return f.median if f is not None else 0.0

    def as_json(self) -> dict[str, Any]:
        m = self.median
        out: dict[str, Any] = {
            "core": self.core,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "small": {
                "tx_pps": m("small", "tx_pps"),
                "rx_pps": m("small", "rx_pps"),
                "c_pps": m("small", "c_pps"),
            },
            "bulk": {"gbit": m("bulk", "gbit"), "memcpy_gbit": m("bulk", "memcpy_gbit")},
            "link": {
                k: m("link", k)
                for k in (
                    "xennet_tx_gbit",
                    "xennet_rx_gbit",
                    "veth_gbit",
                    "relay_gbit",
                    "xennet_rtt_ms",
                    "veth_rtt_ms",
                    "relay_rtt_ms",
                )  # fmt: skip
            },
            "scale": self.extra.get("scale", {"guests": 0, "rss_mib": 0.0, "ok": False}),
            "figures": {
                g: {k: f.as_dict() | {"name": f.name} for k, f in fs.items()}
                for g, fs in self.figures.items()
            },
        }
        for group in ("small", "bulk", "link", "rx", "c"):
            for k, f in self.figures.get(group, {}).items():
                out.setdefault(group, {}).setdefault(k, f.median)
        return out


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{host.system()} {host.release()}, {os.cpu_count()} CPUs ({cpu}), Python {host.python_version()}"


def _tick(progress: Progress | None, what: str, done: float) -> None:
    if progress is not None:
        progress(what, done)


def small(plan: BenchPlan, rep: Report, progress: Progress | None = None) -> None:
    """64 B frames both ways, poll_us 0 and ``plan.poll_us``, beside a socketpair and C."""
    n = plan.small_frames
    for i in range(plan.runs):
        _tick(progress, f"small: run {i + 1} of {plan.runs}", i / plan.runs)
        for poll, suffix in ((0, ""), (plan.poll_us, "_busy")):
            for direction in ("tx", "rx"):
                r = run_flow(FlowJob(direction, n, poll_us=poll))
                rep.fig(
                    "small", f"{direction}_pps{suffix}", f"xennet {direction} 64 B, poll_us={poll}", "pps"
                ).add(r["pps"])
        rep.fig("small", "socketpair_pps", "Unix socketpair, 2 processes", "pps").add(socketpair_pps(n))
        rep.fig("small", "c_pps", "C, ring.h macros, 2 busy-polling processes", "pps").add(
            cref(64, 2_000_000)[0]
        )


def bulk(plan: BenchPlan, rep: Report, progress: Progress | None = None) -> None:
    """64 KiB GSO frames both ways, beside memcpy over a working set larger than the LLC."""
    for i in range(plan.runs):
        _tick(progress, f"bulk: run {i + 1} of {plan.runs}", i / plan.runs)
        for poll, suffix in ((0, ""), (plan.poll_us, "_busy")):
            for direction, key in (("tx", "gbit"), ("rx", "rx_gbit")):
                job = FlowJob(direction, plan.bulk_frames, size=FRAME, gso_size=MSS, poll_us=poll)
                rep.fig("bulk", key + suffix, f"xennet {direction} 64 KiB GSO, poll_us={poll}", "Gbit/s").add(
                    run_flow(job)["gbit"]
                )
        rep.fig(
            "bulk", "memcpy_gbit", "memcpy, 64 KiB chunks over 256 MiB (Python memoryview)", "Gbit/s"
        ).add(memcpy_gbit())
        rep.fig("bulk", "c_gbit", "C, ring.h macros, 64 KiB, 2 busy-polling processes", "Gbit/s").add(
            cref(65536, 100_000)[1]
        )


def rx(plan: BenchPlan, rep: Report, progress: Progress | None = None) -> None:
    """Backend -> guest under each packing, small and GSO frames."""
    for i in range(plan.runs):
        _tick(progress, f"rx: run {i + 1} of {plan.runs}", i / plan.runs)
        for packing in ("seed", "full"):
            back = NetbackConfig(rx_packing=packing)
            r = run_flow(FlowJob("rx", plan.rx_frames, back=back))
            rep.fig("rx", f"{packing}_pps", f"rx 64 B, packing {packing}", "pps").add(r["pps"])
            r = run_flow(FlowJob("rx", plan.bulk_frames, size=FRAME, gso_size=MSS, back=back))
            rep.fig("rx", f"{packing}_gbit", f"rx 64 KiB GSO, packing {packing}", "Gbit/s").add(r["gbit"])


def link(plan: BenchPlan, rep: Report, progress: Progress | None = None) -> None:
    """iperf3 and ping through ``xennet link``, a veth pair and the naive relays (one process
    and two)."""
    from .link import link_figures

    done = [0]

    def step(k: int) -> None:
        done[0] = k
        _tick(progress, f"link: run {k} of {plan.runs}", k / plan.runs)

    for poll, suffix in ((0, ""), (plan.poll_us, "_busy")):
        f = link_figures(
            plan.runs,
            plan.link_seconds,
            LinkConfig(poll_us=poll),
            busy_poll_us=plan.rtt_poll_us,
            progress=step,
        )
        g = rep.figures.setdefault("link", {})
        g["xennet_tx_gbit" + suffix] = replace(f.xennet_tx, name=f"xennet guest->host, poll_us={poll}")
        g["xennet_rx_gbit" + suffix] = replace(f.xennet_rx, name=f"xennet host->guest, poll_us={poll}")
        if not suffix:
            g["veth_gbit"], g["relay_gbit"], g["relay_rx_gbit"] = f.veth, f.relay_tx, f.relay_rx
            g["split_relay_gbit"], g["split_relay_rx_gbit"] = f.split_tx, f.split_rx
            g["xennet_rtt_ms"], g["veth_rtt_ms"], g["relay_rtt_ms"] = f.xennet_rtt, f.veth_rtt, f.relay_rtt
            g["split_relay_rtt_ms"] = f.split_rtt
            g["xennet_rtt_busy_ms"] = f.xennet_rtt_busy
        rep.extra.setdefault("link_errors", []).extend(f.errors)
        if plan.quick:
            break  # the busy-poll throughput is measured in full runs only


def scale(plan: BenchPlan, rep: Report, progress: Progress | None = None) -> None:
    from .scale import ScaleJob, run_scale

    _tick(progress, f"scale: {plan.scale_guests} guests", 0.0)
    r = run_scale(ScaleJob(guests=plan.scale_guests, frames=plan.scale_frames))
    parts = r["rss_parts"]
    rep.extra["scale"] = {"guests": r["guests"], "rss_mib": r["rss_mib"], "ok": r["ok"], **parts}
    rep.fig("scale", "rss_mib", f"backend RSS serving {r['guests']} guests", "MiB").add(r["rss_mib"])
    for key, what in (("anon_mib", "private (RssAnon)"), ("shmem_mib", "shared: domain files (RssShmem)")):
        rep.fig("scale", key, f"  of which {what}", "MiB").add(parts[key])


def c(plan: BenchPlan, rep: Report, progress: Progress | None = None) -> None:
    for i in range(plan.runs):
        _tick(progress, f"c: run {i + 1} of {plan.runs}", i / plan.runs)
        rep.fig("c", "pps_64", "C 64 B", "pps").add(cref(64, 2_000_000)[0])
        rep.fig("c", "gbit_64k", "C 64 KiB", "Gbit/s").add(cref(65536, 100_000)[1])


BENCHES: dict[str, Callable[[BenchPlan, Report, Progress | None], None]] = {
    "small": small,
    "bulk": bulk,
    "rx": rx,
    "link": link,
    "c": c,
    "scale": scale,
}


def report(names: list[str], plan: BenchPlan, progress: Progress | None = None) -> Report:
    rep = Report(core.CORE)
    for name in names:
        BENCHES[name](plan, rep, progress)
    return rep


# --- the C reference, built at bench time --------------------------------------------------

_CREF: Path | None = None


def cref_binary() -> Path:
    """Build ``cref.c`` against libxen-dev's ring.h (once per process)."""
    global _CREF
    if _CREF is not None and _CREF.exists():
        return _CREF
    src = Path(__file__).with_name("cref.c")
    out = Path(tempfile.mkdtemp(prefix="xennet-cref-")) / "cref"
    r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(
            f"cannot build the C reference (apt-get install gcc libxen-dev): {r.stderr[-400:]}"
        )
    _CREF = out
    return out


def cref(size: int, packets: int) -> tuple[float, float]:
    """(packets/s, Gbit/s) of the C reference moving ``packets`` of ``size`` bytes."""
    r = subprocess.run(
        [str(cref_binary()), str(size), str(packets)], capture_output=True, text=True, timeout=120
    )
    if r.returncode:
        raise RuntimeError(f"the C reference failed: {r.stderr[-300:]}")
    _pps, pps, _g, gbit = r.stdout.split()
    return float(pps), float(gbit)


# --- what the figures say against the targets ----------------------------------------------


def targets(rep: Report) -> list[tuple[str, str, bool]]:
    """(target, the figures, met?) for the issue's targets that this run measured."""
    m = rep.median
    out: list[tuple[str, str, bool]] = []
    if "small" in rep.figures:
        for k in ("tx_pps", "rx_pps", "tx_pps_busy", "rx_pps_busy"):
            if k in rep.figures["small"]:
                out.append((f"64 B {k} >= 1,000,000 pps", f"{m('small', k):,.0f}", m("small", k) >= 1e6))
    if "bulk" in rep.figures:
        mc = rep.figures["bulk"]["memcpy_gbit"]
        for k in ("gbit", "rx_gbit", "gbit_busy", "rx_gbit_busy"):
            if k in rep.figures["bulk"]:
                r = ratio(rep.figures["bulk"][k], mc)
                out.append((f"64 KiB {k} >= 0.5x memcpy", f"{m('bulk', k):.1f} Gbit/s = {r:.2f}x", r >= 0.5))
    if "link" in rep.figures:
        g = rep.figures["link"]
        for k in ("xennet_tx_gbit", "xennet_rx_gbit", "xennet_tx_gbit_busy", "xennet_rx_gbit_busy"):
            if k in g:
                rr = ratio(g[k], g["relay_gbit"])
                rv = ratio(g[k], g["veth_gbit"])
                out.append(
                    (
                        f"link {k} >= 1.0x relay, >= 0.6x veth",
                        f"{rr:.2f}x relay, {rv:.2f}x veth",
                        rr >= 1 and rv >= 0.6,
                    )
                )
        for k in ("xennet_rtt_ms", "xennet_rtt_busy_ms"):
            if k in g:
                rv = ratio(g[k], g["veth_rtt_ms"])
                out.append((f"{k} <= 3x veth", f"{g[k].median:.3f} ms = {rv:.1f}x", rv <= 3))
    if "scale" in rep.extra:
        s = rep.extra["scale"]
        out.append(
            (
                f"{s['guests']} guests in <= 512 MiB",
                f"{s['rss_mib']:.0f} MiB, ok={s['ok']}",
                s["ok"] and s["rss_mib"] <= 512,
            )
        )
    return out
