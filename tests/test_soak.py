"""``xennet soak``: the plan covers every policy, the report's invariants catch what they
should, and (slow) a short soak across processes holds them -- and fails on injected corruption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from xennet.cli.main import main
from xennet.netback.rxpolicy import ADMISSION_POLICIES, PACKING_POLICIES
from xennet.netfront.slotpolicy import policy_names
from xennet.world.soak import CORRUPT_ENV, MIB, SoakPlan, SoakResult, all_phases, run_soak

ZERO = {"pages": 0, "grants": 0, "maps": 0, "ports": 0}


def test_phases_cover_every_tx_policy_and_rx_packing_and_admission() -> None:
    ph = all_phases()
    assert {(p.policy, p.data) for p in ph if p.direction == "tx"} == {
        (pol, d) for pol in policy_names() for d in ("copy", "map")
    }
    assert {(p.packing, p.admission) for p in ph if p.direction == "rx"} == {
        (pk, ad) for pk in PACKING_POLICIES for ad in ADMISSION_POLICIES
    }
    assert {p.ip for p in ph} == {4, 6}


@pytest.mark.parametrize("packets", [1, 100, 20_000, 1_000_003])
def test_chunks_share_the_packets_round_robin(packets: int) -> None:
    plan = SoakPlan(packets)
    chunks = plan.chunks()
    assert sum(n for _p, n in chunks) == packets
    assert all(0 < n <= plan.chunk for _p, n in chunks)
    assert [p for p, _n in chunks] == [i % len(plan.phases) for i in range(len(chunks))]
    if packets >= 2 * len(plan.phases):  # warm-up is one pass: there is always a second
        assert len(chunks) >= 2 * len(plan.phases)


def _result(plan: SoakPlan, **change: Any) -> SoakResult:
    """A consistent result of a clean run of ``plan`` (what the processes would report)."""
    gen: dict[int, int] = {}
    for p, n in plan.chunks():
        gen[p] = gen.get(p, 0) + n
    tx = {p: n for p, n in gen.items() if plan.phases[p].direction == "tx"}
    rx = {p: n for p, n in gen.items() if plan.phases[p].direction == "rx"}
    ok = {"received": tx, "verified": tx, "corrupted": {}, "errors": []}
    rx_ok = {"received": rx, "verified": rx, "corrupted": {}, "errors": []}
    guest_a = {
        "seconds": 1.0,
        "paced_s": 0.0,
        "generated": gen,
        "ring": gen,
        "drops": {},
        "policy": {},
        "sink": rx_ok,
        "stats": {"tx_policy": {}},
        "connections": len(plan.chunks()),
        "accounting": dict(ZERO),
    }
    backend = {
        "sink": ok,
        "vif_a": {"tx_errors": {}, "rx_dropped": {}},
        "vif_b": {"fatal": {"too_many_slots": 1}},
        "b_vifs_served": 2,
        "hostile_accepted": 0,
        "accounting": dict(ZERO),
    }
    guest_b = {"rounds": 2, "kinds": {}, "responses": {}, "fatal_rounds": 1, "accounting": dict(ZERO)}
    rss = [{"t": i, "packets": plan.packets * i // 10, "backend": {"RssAnon": 30 * MIB}} for i in range(11)]
    r = SoakResult(plan, backend, guest_a, guest_b, rss, {0: dict(ZERO), 1: dict(ZERO)}, 2.0)
    for key, value in change.items():
        setattr(r, key, value)
    return r


def test_a_clean_result_has_no_problems() -> None:
    s = _result(SoakPlan(1000)).summary()
    assert s["problems"] == [] and s["ok"]
    assert s["sent"] == s["received"] == s["verified"] == 1000
    assert s["corrupted"] == s["unaccounted"] == 0


def test_report_flags_corruption_lost_packets_leaks_and_rss_growth() -> None:
    plan = SoakPlan(1000)
    r = _result(plan)
    r.backend["sink"] = {**r.backend["sink"], "corrupted": {0: 1}}
    assert any("corrupted" in p for p in r.summary()["problems"])

    r = _result(plan)
    received = dict(r.backend["sink"]["received"])
    received[0] -= 1
    r.backend["sink"] = {**r.backend["sink"], "received": received}
    s = r.summary()
    assert s["unaccounted"] == 1 and any("unaccounted" in p for p in s["problems"])
    # the same packet, dropped with a counter, is accounted for
    r.backend["vif_a"] = {"tx_errors": {"runt": 1}, "rx_dropped": {}}
    assert r.summary()["unaccounted"] == 0

    r = _result(plan, accounting_after={0: dict(ZERO), 2: {**ZERO, "pages": 2}})
    assert any("still held" in p for p in r.summary()["problems"])

    r = _result(plan)
    r.rss[-1]["backend"] = {"RssAnon": 30 * MIB + int(plan.rss_bound_mib * MIB) + 1}
    s = r.summary()
    assert s["rss_growth_bytes"]["backend"] > s["rss_bound_bytes"]
    assert any("RssAnon grew" in p for p in s["problems"])
    # growth during warm-up (the first pass over the phases) is not a leak
    r = _result(plan)
    r.rss[0]["backend"] = {"RssAnon": 1 * MIB}
    assert r.summary()["problems"] == []

    r = _result(plan)
    r.backend["vif_b"] = {"fatal": {}}
    assert any("hostile guest" in p for p in r.summary()["problems"])

    r = _result(plan)
    r.guest_b = {**r.guest_b, "rounds": 1}
    assert any("hostile guest ran 1 rounds, fewer than 2" in p for p in r.summary()["problems"])


def test_the_hostile_guest_is_held_to_a_rate() -> None:
    plan = SoakPlan(10_000, hostile_every=2000)
    assert [plan.hostile_rounds(n) for n in (0, 1999, 2000, 9999, 10_000)] == [0, 0, 1, 4, 5]
    assert SoakPlan(100).hostile_rounds(100) == 2  # an answered round and a disconnecting one
    with pytest.raises(ValueError):
        SoakPlan(100, hostile_every=0)


@pytest.mark.slow
def test_short_soak_holds_every_invariant() -> None:
    r = run_soak(SoakPlan(20_000, seed=3))
    s = r.summary()
    assert s["problems"] == [], s["problems"]
    assert s["sent"] == 20_000 and s["corrupted"] == 0 and s["unaccounted"] == 0
    assert s["verified"] == s["received"] >= s["sent"] - s["drops"]["tx_policy_dropped"]
    for name, row in s["per_phase"].items():
        assert row["generated"] > 0 and row["corrupted"] == 0, name
    assert s["per_phase"]["tx drop data=copy ipv4"]["policy"].get("drop:dropped", 0) > 0
    h = s["hostile"]
    assert h["rounds"] >= 10 and h["disconnects"] >= 5  # one round a 2000 packets, half fatal
    assert h["vifs_served"] - h["rounds"] in (0, 1)  # the last attach may meet the stop
    assert {"runt", "too_many_slots", "bad_gso_headers"} <= set(h["tx_errors"])
    assert all(a == ZERO for a in s["accounting_after"].values())
    assert all(a == ZERO for a in s["accounting_at_exit"].values())
    assert len(s["rss_samples"]) >= 3
    assert max(s["rss_growth_bytes"].values()) <= s["rss_bound_bytes"]


@pytest.mark.slow
def test_soak_catches_injected_corruption(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    res = CliRunner().invoke(main, ["soak", "--packets", "800", "--json", str(out)], env={CORRUPT_ENV: "50"})
    assert res.exit_code == 1, res.output
    s = json.loads(out.read_text())
    assert s["corrupted"] >= 800 // 50 - 1 and not s["ok"]
    assert any("corrupted" in p for p in s["problems"])
    assert "FAILED" in res.output
