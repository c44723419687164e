"""The naive relays that ``xennet bench link`` measures xennet against: one process, and split
in two.  A peer that silently carried nothing would make every ratio meaningless, so each one
must carry ping and TCP both ways, and leave no process or namespace behind."""

from __future__ import annotations

import os

import pytest

from netnsutil import netns_list
from xennet.bench.relay import RelayLink
from xennet.world.link import preflight
from xennet.world.linkcheck import measure

pytestmark = pytest.mark.slow

_missing = preflight(check=True)
if _missing:
    pytest.skip("the relays cannot run here: " + "; ".join(_missing), allow_module_level=True)


@pytest.mark.parametrize("split", [False, True], ids=["one-process", "split"])
def test_relay_carries_ping_and_tcp_both_ways(split: bool) -> None:
    rl = RelayLink(219, os.getpid() % 200 + 20, split=split)
    try:
        assert len(rl.procs) == (2 if split else 1)
        assert rl.a is not None and rl.b is not None
        names = {rl.a.name, rl.b.name}
        there = measure(rl.a.name, rl.b.name, rl.ip_b, 1)
        back = measure(rl.a.name, rl.b.name, rl.ip_b, 1, reverse=True)
        for f in (there, back):
            assert not f.error, f
            assert f.rtt_ms is not None and f.rtt_ms > 0, f
            assert f.gbit_s is not None and f.gbit_s > 0.05, f  # TCP for a second, not a trickle
        assert all(p.is_alive() for p in rl.procs)
    finally:
        rl.close()
    assert not names & netns_list()
    assert not any(p.is_alive() for p in rl.procs)
