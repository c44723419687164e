"""The real thing: xenstored, backend and guests as separate OS processes over shared memory."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from xennet.world.demo import run_demo
from xennet.world.sim.domains import TrafficPlan, guest_main, serve_backend
from xennet.world.sim.procs import DomainProcess
from xennet.world.sim.toolstack import SimToolstack
from xennet.xenbus.paths import VifPaths
from xennet.xenbus.toolstack import VifSpec, attach_vif

pytestmark = pytest.mark.slow


def test_demo_moves_verified_frames_both_ways_and_leaks_nothing() -> None:
    r = run_demo(to_backend=1500, to_guest=1500, seed=7)
    assert r.problems == []
    assert r.guest["received"] == 1500 and r.backend["received"] == 1500
    assert r.guest["transitions"] == ["Initialising", "Initialised", "Connected", "Closing", "Closed"]
    assert r.backend["transitions"] == ["Initialising", "InitWait", "Connected", "Closing", "Closed"]
    assert r.accounting_after == {
        0: {"pages": 0, "grants": 0, "maps": 0, "ports": 0},
        1: {"pages": 0, "grants": 0, "maps": 0, "ports": 0},
    }


@pytest.fixture
def toolstack() -> Iterator[SimToolstack]:
    with SimToolstack("xennet-test-") as ts:
        yield ts


def _wait(cond, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_a_killed_guest_is_noticed_and_the_backend_keeps_serving(toolstack: SimToolstack) -> None:
    ts = toolstack
    for d in (0, 1, 2):
        ts.domain(d, 2048)
    stop = "/local/domain/0/xennet-test-stop"
    back = DomainProcess("backend", serve_backend, ts.world.path, 0, stop, False)
    ts.procs.append(back)
    victim_paths = VifPaths(1, 0, 0)
    attach_vif(ts.xs, victim_paths, VifSpec(mac="00:16:3e:00:00:01"))
    # a guest that streams frames until it is killed
    victim = DomainProcess(
        "guest-d1",
        guest_main,
        ts.world.path,
        1,
        victim_paths,
        TrafficPlan(10**7, 0, 1, "00:16:3e:00:00:01", 120.0),
    )
    ts.procs.append(victim)
    assert _wait(lambda: ts.world.accounting(0).maps == 2), "backend never mapped the victim's rings"
    time.sleep(0.3)  # let traffic flow
    victim.kill()
    assert not ts.world.domain_alive(1)
    ts.xs.release(1)  # what the toolstack does when a domain dies: @releaseDomain fires
    assert _wait(lambda: ts.world.accounting(0).maps == 0 and ts.world.accounting(0).ports == 0), (
        f"backend still holds {ts.world.accounting(0)} of the dead guest"
    )
    # the backend unmaps first and writes Closed after: wait for that too, do not race it
    assert _wait(lambda: ts.xs.try_read(f"{victim_paths.backend}/state") == "6"), (
        f"backend state {ts.xs.try_read(f'{victim_paths.backend}/state')!r}, not Closed"
    )
    assert ts.world.accounting(0).pages == 0

    # another guest on the same backend process works
    paths = VifPaths(2, 0, 0)
    attach_vif(ts.xs, paths, VifSpec(mac="00:16:3e:00:00:02"))
    g = DomainProcess(
        "guest-d2", guest_main, ts.world.path, 2, paths, TrafficPlan(300, 0, 3, "00:16:3e:00:00:02", 30.0)
    )
    ts.procs.append(g)
    result = g.result(60)
    assert result["sent"] == 300 and result["stats"]["tx_completed"] == 300
    assert result["state"] == "Closed" and result["accounting"] == {
        "pages": 0,
        "grants": 0,
        "maps": 0,
        "ports": 0,
    }
    ts.xs.write(stop, "1")
    b = back.result(30)
    assert b["vifs"]["vif1.0"]["stats"]["fatal"] == {"peer_gone": 1}
    assert b["vifs"]["vif2.0"]["stats"]["tx_packets"] == 300
    assert b["accounting"] == {"pages": 0, "grants": 0, "maps": 0, "ports": 0}


def test_a_killed_backend_is_noticed_and_the_guest_gets_its_grants_back(toolstack: SimToolstack) -> None:
    ts = toolstack
    for d in (0, 1):
        ts.domain(d, 2048)
    back = DomainProcess("backend", serve_backend, ts.world.path, 0, "/local/domain/0/never", False)
    ts.procs.append(back)
    paths = VifPaths(1, 0, 0)
    attach_vif(ts.xs, paths, VifSpec())
    guest = DomainProcess(
        "guest-d1", guest_main, ts.world.path, 1, paths, TrafficPlan(10**7, 0, 1, "00:16:3e:00:00:01", 60.0)
    )
    ts.procs.append(guest)
    assert _wait(lambda: ts.world.accounting(0).maps == 2)
    time.sleep(0.2)
    back.kill()
    assert _wait(lambda: not ts.world.domain_alive(0))
    ts.world.destroy_domain(0)  # the hypervisor drops the dead domain's mappings
    ts.xs.rm(paths.backend)  # and the toolstack removes the dead backend's device
    r = guest.result(60)
    assert r["broken"] and r["state"] == "Closed"
    assert "backend is gone" in (r["error"] or "")
    assert r["accounting"] == {"pages": 0, "grants": 0, "maps": 0, "ports": 0}
