"""Faults under real traffic: an end of a link killed (kill -9) mid-transfer, xenstored dying.

Each test checks the toolstack's part (reap, tidy xenstore, restart) brings the link back,
that TCP moved every byte correctly across the outage, and that nothing is left behind.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from netnsutil import netns_list
from xennet.world.chaos import HashedTransfer, kill_and_restart
from xennet.world.link import BACKEND, Link, LinkConfig, preflight

pytestmark = pytest.mark.slow

_missing = preflight(check=True)
if _missing:
    pytest.skip("xennet link cannot run here: " + "; ".join(_missing), allow_module_level=True)

IDLE = {"pages": 0, "grants": 0, "maps": 0, "ports": 0}


def _gone(pid: int | None) -> bool:
    if pid is None or not os.path.exists(f"/proc/{pid}"):
        return True
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except OSError:
        return True


class Tracked:
    """A link whose every process is remembered, so teardown can check none survives."""

    def __init__(self) -> None:
        self.lk = Link(LinkConfig())
        assert self.lk.ts is not None
        self.names = {self.lk.addr.guest_ns, self.lk.addr.host_ns}
        self.world_dir = self.lk.ts.path
        self.pids: set[int | None] = set()
        self.note()

    def note(self) -> None:
        self.pids |= {self.lk.guest.pid, self.lk.backend.pid}


@pytest.fixture
def tracked() -> Iterator[Tracked]:
    t = Tracked()
    try:
        yield t
    finally:
        t.note()
        t.lk.close()
        assert not t.names & netns_list()
        assert not os.path.exists(t.world_dir)
        assert all(_gone(pid) for pid in t.pids)


def _accounting_clean(result: dict) -> None:  # type: ignore[type-arg]
    for domid, acct in result["accounting_after"].items():
        assert acct == IDLE, f"domain {domid} still holds {acct}"


def test_backend_killed_mid_transfer_comes_back_and_every_byte_arrives(tracked: Tracked) -> None:
    lk = tracked.lk
    transfer = HashedTransfer(lk, nbytes=24 << 20, rate=6 << 20)
    try:
        assert transfer.wait_received(6 << 20, 20), f"only {transfer.received} bytes before the kill"
        k = kill_and_restart(lk, transfer, "backend", 0.0)
        tracked.note()
        assert k.outcome == "recovered", k
        check = transfer.finish(timeout=60)
    finally:
        transfer.close()
    print(f"backend restart: reconnected after {k.reconnected_after_s:.3f} s, "
          f"stream resumed after {k.resumed_after_s:.3f} s")  # fmt: skip
    assert check["sent"] == 24 << 20 and check["match"], check
    result = lk.close()
    guest = result["link-guest"]
    t = guest["transitions"]
    # the first connection, its close when the backend vanished, and a new connection
    first = t.index("Connected")
    closing = t.index("Closing", first)
    assert t[closing + 1] == "Closed" and "Connected" in t[closing + 2 :], t
    assert guest["reconnects"] >= 1
    assert result["link-backend"]["vifs"]["vif1.0"]["stats"]["tx_packets"] > 0  # the new backend carried it
    _accounting_clean(result)


def test_guest_killed_mid_transfer_is_freed_by_the_backend_and_a_new_guest_carries_on(
    tracked: Tracked,
) -> None:
    lk = tracked.lk
    assert lk.ts is not None and lk.ts.xs is not None
    transfer = HashedTransfer(lk, nbytes=16 << 20, rate=6 << 20)
    try:
        assert transfer.wait_received(4 << 20, 20), f"only {transfer.received} bytes before the kill"
        assert lk.ts.accounting(BACKEND)[BACKEND]["maps"] > 0  # the backend maps the guest's rings
        lk.kill_guest()
        lk.ts.xs.release(lk.guest_domid)  # the toolstack: @releaseDomain
        # the backend lets go of everything of that vif: domain 0 back to idle, and keeps serving
        assert lk.wait_released(lk.guest_domid) == IDLE
        assert lk.backend.proc.is_alive() and not lk.backend.poll()
        k = kill_and_restart(lk, transfer, "guest", 0.0)  # a new guest domain, same MAC and address
        tracked.note()
        assert k.outcome == "recovered", k
        assert lk.guest_domid == 2
        check = transfer.finish(timeout=60)
    finally:
        transfer.close()
    print(f"guest restart: reconnected after {k.reconnected_after_s:.3f} s, "
          f"stream resumed after {k.resumed_after_s:.3f} s")  # fmt: skip
    assert check["sent"] == 16 << 20 and check["match"], check
    result = lk.close()
    vifs = result["link-backend"]["vifs"]
    assert vifs["vif1.0"]["stats"]["fatal"] == {"peer_gone": 1}  # one count for the death
    assert vifs["vif2.0"]["stats"]["tx_packets"] > 0
    assert result["link-guest"]["transitions"][-1] == "Closed"
    _accounting_clean(result)


def test_xenstored_dying_stops_both_ends_cleanly_and_leaks_nothing(tracked: Tracked) -> None:
    lk = tracked.lk
    ts = lk.ts
    assert ts is not None and ts.world is not None
    transfer = HashedTransfer(lk, nbytes=64 << 20, rate=4 << 20)
    try:
        assert transfer.wait_received(2 << 20, 20)
        assert ts.accounting(BACKEND)[BACKEND]["maps"] > 0
        ts.daemon.kill()  # xenstored dies under a live connection
        ts.daemon.wait(10)
        results = {p.name: p.result(30) for p in (lk.guest, lk.backend)}  # both end by themselves
    finally:
        transfer.close()
    for name, r in results.items():
        assert r["stopped"] == "xenstore_gone", (name, r)
        assert "xenstored" in r["error"], (name, r)
        assert r["accounting"] == IDLE, (name, r)  # torn down locally: nothing held
    # and what the world's files say, from outside: no page, grant, map or port left
    assert ts.accounting(BACKEND, lk.guest_domid) == {BACKEND: IDLE, lk.guest_domid: IDLE}
    assert results["link-guest"]["transitions"][-1] == "Closed"


def test_link_chaos_cli_recovers_every_kill_and_the_bytes_match() -> None:
    import json
    import sys

    before = netns_list()
    r = subprocess.run(
        [sys.executable, "-m", "xennet", "link", "--chaos", "40", "--chaos-kills", "3", "--seed", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    out = json.loads(r.stdout)
    kills = out["kills"]
    assert len(kills) == 3, kills
    assert {k["end"] for k in kills} <= {"backend", "guest"}
    for k in kills:
        assert k["outcome"] == "recovered", k
        assert k["reconnected_after_s"] > 0 and k["resumed_after_s"] >= k["reconnected_after_s"]
        assert k["bytes_verified"] > k["bytes_at_kill"]
    t = out["transfer"]
    assert t["match"] and t["sent"] == t["received"] > kills[-1]["bytes_at_kill"], t
    assert out["all_recovered"]
    for domid, acct in out["held_after_teardown"].items():
        assert acct == IDLE, f"domain {domid} still holds {acct}"
    assert netns_list() <= before


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_guest_waiting_for_a_new_backend_sleeps_while_its_tap_has_frames(tracked: Tracked) -> None:
    import time

    lk = tracked.lk
    assert lk.ts is not None and lk.ts.xs is not None
    transfer = HashedTransfer(lk, nbytes=16 << 20, rate=6 << 20)
    try:
        assert transfer.wait_received(2 << 20, 20)
        lk.kill_backend()
        lk.ts.world.destroy_domain(BACKEND)  # type: ignore[union-attr]
        lk.ts.xs.rm(lk.paths.backend)
        state = f"{lk.paths.frontend}/state"
        end = time.monotonic() + 10
        while lk.ts.xs.try_read(state) != "1" and time.monotonic() < end:  # closed, asked again
            time.sleep(0.02)
        assert lk.ts.xs.try_read(state) == "1"
        # the guest's TCP keeps retransmitting into the TAP; nobody can take the frames now
        pid = lk.guest.pid
        assert pid is not None
        c0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(1.0)  # the measuring window, not a wait for readiness
        busy = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        assert busy < 0.3, f"the guest spins at {busy:.0%} of a CPU while its backend is away"
        k = kill_and_restart(lk, transfer, "backend", 0.0)
        tracked.note()
        assert k.outcome == "recovered", k
        assert transfer.finish(timeout=60)["match"]
    finally:
        transfer.close()
    _accounting_clean(lk.close())
