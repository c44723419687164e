"""Every policy, selected by config, end to end across processes, every byte verified."""

from __future__ import annotations

import pytest

from xennet.netback.interface import NetbackConfig
from xennet.netback.tx import TxLimits
from xennet.netfront.device import NetfrontConfig
from xennet.ports.pktgen import TrafficSpec, preset_layouts, worst_layout
from xennet.world.pktgen_run import PktgenJob, run_pktgen

pytestmark = pytest.mark.slow

MIX = (worst_layout(),) * 3 + tuple(preset_layouts("random", 40, 11)) + tuple(preset_layouts("cork", 10, 11))
ZERO = {"pages": 0, "grants": 0, "maps": 0, "ports": 0}


@pytest.mark.parametrize("policy", ["drop", "linearize", "segment", "relayout"])
@pytest.mark.parametrize("data", ["copy", "map"])
def test_tx_policies(policy: str, data: str) -> None:
    spec = TrafficSpec(mss=1448, seed=3)
    job = PktgenJob(
        MIX,
        spec,
        "tx",
        front=NetfrontConfig(slot_policy=policy),
        back=NetbackConfig(tx_limits=TxLimits(data=data)),
    )  # type: ignore[arg-type]
    r = run_pktgen(job)
    s = r.summary()
    assert s["problems"] == []
    over = sum(1 for lay in MIX if sum(p.slots() for p in lay) > 18)
    stats = r.guest["stats"]
    if policy == "drop":
        assert stats["tx_policy"][f"{policy}:dropped"] == over
        assert s["frames_verified"] == len(MIX) - over
    else:
        assert stats["tx_policy"].get(f"{policy}:dropped", 0) == 0
        assert stats["tx_policy"][f"{policy}:applied"] == over
        assert s["frames_verified"] == stats["tx_packets"] >= len(MIX)
    # the backend never saw a slot over the limit nor a fatal error
    vif = r.backend["vif"]["stats"]
    assert not vif["fatal"] and not vif["tx_errors"]
    assert r.accounting_after == {0: ZERO, 1: ZERO}


@pytest.mark.parametrize("packing", ["seed", "full"])
@pytest.mark.parametrize("admission", ["estimate", "fit-or-wait"])
def test_rx_packing_and_admission(packing: str, admission: str) -> None:
    spec = TrafficSpec(mss=1448, seed=5)
    job = PktgenJob(MIX, spec, "rx", back=NetbackConfig(rx_packing=packing, rx_admission=admission))
    r = run_pktgen(job)
    s = r.summary()
    assert s["problems"] == []
    assert s["frames_verified"] == len(MIX) and r.guest["received"] == len(MIX)
    assert not r.guest["stats"]["rx_errors"], r.guest["stats"]["rx_errors"]  # unconsumed_at_close too
    vif = r.backend["vif"]["stats"]
    assert not vif["rx_dropped"], vif["rx_dropped"]
    assert r.accounting_after == {0: ZERO, 1: ZERO}


def test_udp_over_ipv6_full_checksums() -> None:
    spec = TrafficSpec(ip=6, proto="udp", csum="full", seed=8)
    for direction in ("tx", "rx"):
        r = run_pktgen(PktgenJob(tuple(preset_layouts("random", 30, 2)), spec, direction))  # type: ignore[arg-type]
        assert r.summary()["problems"] == [] and r.sink["verify"]["frames"] == 30
