"""Seed 003 as a user runs it: ``xennet switch`` -- N guest namespaces, each a netfront
process with a TAP, joined by a learning bridge in the driver domain.  Guest-to-guest frames
are grant-copied from the sender's grant into the receiver's buffer (data=map); a copying
backend (data=copy) is the contrast.  Everything lives in namespaces these tests create."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netnsutil import netns_list
from xennet.netback.interface import NetbackConfig
from xennet.netback.tx import TxLimits
from xennet.world.link import preflight
from xennet.world.switch import Switch, SwitchConfig, forwarding

pytestmark = pytest.mark.slow

_missing = preflight(check=True)
if _missing:
    pytest.skip("xennet switch cannot run here: " + "; ".join(_missing), allow_module_level=True)


def test_three_guests_by_grant_copy_with_nothing_staged() -> None:
    """The issue's own command: ``xennet link guests=3 --check``."""
    before = netns_list()
    run = subprocess.run(
        [sys.executable, "-m", "xennet", "link", "guests=3", "--check", "--json", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    v = json.loads(run.stdout)
    assert v["problems"] == [] and v["ok"] and v["data"] == "map"
    assert len(v["pings_ms"]) == 6 and all(rtt is not None for rtt in v["pings_ms"].values())
    paths = v["paths"]
    assert paths["xennet"]["gbit"]["median"] > 0 and paths["linux bridge"]["gbit"]["median"] > 0
    assert paths["xennet"]["reverse_gbit"]["median"] > 0 and v["vs_linux_bridge"]["gbit"] > 0
    fwd = v["forwarding"]
    assert fwd["staged_bytes"] == 0
    # iperf3 moved at least a megabyte each way between guests 1 and 2, all of it by grant copy
    assert fwd["vifs"]["vif2.0"]["rx_bytes_forwarded"] > 1_000_000
    assert fwd["vifs"]["vif1.0"]["rx_bytes_forwarded"] > 1_000_000
    assert fwd["bridge"]["forwarded"] > 0
    assert all(not any(a.values()) for a in v["held_after_teardown"].values())
    assert netns_list() == before  # every namespace removed, the Linux bridge's too


def test_a_copying_backend_stages_what_it_forwards() -> None:
    back = NetbackConfig(tx_limits=TxLimits(data="copy"))
    sw = Switch(SwitchConfig(guests=2, back=back))
    try:
        a, b = sw.guests
        ping = ["ping", "-c", "3", "-i", "0.05", "-W", "2", b.addr.guest_ip]
        r = subprocess.run(
            ["ip", "netns", "exec", a.addr.guest_ns, *ping],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        closed = sw.close()
    fwd = forwarding(closed)
    assert fwd["forwarded_bytes"] == 0 and fwd["staged_bytes"] > 0
    assert all(not any(a.values()) for a in closed["accounting_after"].values())


@pytest.mark.parametrize("guests", [1, 17])
def test_the_guest_count_is_checked(guests: int) -> None:
    with pytest.raises(ValueError, match="guests"):
        SwitchConfig(guests=guests)
