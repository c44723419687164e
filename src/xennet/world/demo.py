"""``xennet demo``: a sim world of separate processes — xenstored, a backend domain, a guest —
one vif, frames both ways, every byte checked, counters and accounting reported."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..xenbus.paths import VifPaths
from ..xenbus.toolstack import VifSpec
from .sim.domains import TrafficPlan, backend_main, guest_main
from .sim.toolstack import SimToolstack

BACKEND_DOMID = 0
GUEST_DOMID = 1


@dataclass
class DemoResult:
    guest: dict[str, Any]
    backend: dict[str, Any]
    accounting_after: dict[int, dict[str, int]]
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def pps(self, direction: str) -> float | None:
        key, n = (
            ("tx_seconds", self.guest["sent"])
            if direction == "tx"
            else ("rx_seconds", self.guest["received"])
        )
        secs = self.guest.get(key)
        if not isinstance(secs, float) or secs <= 0:
            return None
        # rx is timed from the first frame received, so it spans n - 1 intervals
        intervals = int(n) if direction == "tx" else int(n) - 1
        return intervals / secs


def run_demo(
    to_backend: int = 2000,
    to_guest: int = 2000,
    seed: int = 1,
    mac: str = "00:16:3e:00:00:01",
    deadline_s: float = 60.0,
) -> DemoResult:
    t0 = time.monotonic()
    with SimToolstack("xennet-demo-") as ts:
        assert ts.xs is not None
        ts.domain(BACKEND_DOMID)
        ts.domain(GUEST_DOMID)
        paths = VifPaths(GUEST_DOMID, BACKEND_DOMID, 0)
        ts.attach(paths, VifSpec(mac=mac))
        plan = TrafficPlan(to_backend, to_guest, seed, mac, deadline_s)
        back = ts.start("backend-d0", backend_main, ts.path, BACKEND_DOMID, plan)
        guest = ts.start("guest-d1", guest_main, ts.path, GUEST_DOMID, paths, plan)
        g = guest.result(deadline_s + 30)
        b = back.result(30)
        ts.detach(paths)
        ts.xs.release(GUEST_DOMID)
        result = DemoResult(g, b, ts.accounting(BACKEND_DOMID, GUEST_DOMID), time.monotonic() - t0)
        result.problems = _problems(result, plan)
        return result


def _problems(r: DemoResult, plan: TrafficPlan) -> list[str]:
    out: list[str] = []
    g, b = r.guest, r.backend
    if g["sent"] != plan.to_backend or b["received"] != plan.to_backend:
        out.append(f"guest->backend: sent {g['sent']}, backend got {b['received']} of {plan.to_backend}")
    if g["received"] != plan.to_guest:
        out.append(f"backend->guest: guest got {g['received']} of {plan.to_guest}")
    for side in (g, b):
        if side["mismatches"]:
            out.append(f"{side['role']}: byte mismatches: {side['mismatches']}")
    for domid, acct in r.accounting_after.items():
        if any(acct.values()):
            out.append(f"domain {domid} still holds {acct} after disconnect")
    if g["state"] != "Closed":
        out.append(f"guest vif ended in state {g['state']}")
    return out


def run_policy_demo(mixed: int = 40, seed: int = 1) -> list[dict[str, Any]]:
    """The worst case (51 slots) plus a mixed run, under each tx policy and each rx packing,
    across processes with every frame checked at the far end."""
    from ..netback.interface import NetbackConfig
    from ..netfront.device import NetfrontConfig
    from ..ports.pktgen import TrafficSpec, preset_layouts, worst_layout
    from .pktgen_run import PktgenJob, run_pktgen

    layouts = (
        (worst_layout(),)
        + tuple(preset_layouts("random", mixed, seed))
        + tuple(preset_layouts("cork", mixed // 4, seed))
    )
    spec = TrafficSpec(mss=1448, seed=seed)
    rows: list[dict[str, Any]] = []
    for policy in ("drop", "linearize", "segment", "relayout"):
        r = run_pktgen(PktgenJob(layouts, spec, "tx", front=NetfrontConfig(slot_policy=policy)))
        rows.append({"path": f"tx policy {policy}", **r.summary()})
    for packing in ("seed", "full"):
        r = run_pktgen(PktgenJob(layouts, spec, "rx", back=NetbackConfig(rx_packing=packing)))
        rows.append({"path": f"rx packing {packing}", **r.summary()})
    return rows
