"""`xennet bench scale`: one backend process, several guest processes, and the backend's RSS."""

from __future__ import annotations

import pytest

from xennet.bench.scale import ScaleJob, run_scale

pytestmark = pytest.mark.slow


def test_scale_reports_the_backends_rss_and_its_parts() -> None:
    r = run_scale(ScaleJob(guests=3, frames=300))
    assert r["ok"] and r["guests"] == 3 and r["backend"]["connected"] == 3, r
    parts = r["rss_parts"]
    assert set(parts) == {"anon_mib", "file_mib", "shmem_mib"}, parts
    # the backend's heap, and the domain files it touched (its own, and the guests' it copies with)
    assert parts["anon_mib"] > 0 and parts["shmem_mib"] > 0, parts
    # one reading of /proc/self/status: the kernel's VmRSS is the sum of the three
    assert sum(parts.values()) == pytest.approx(r["rss_mib"], abs=0.01), r
    nothing_held = {"pages": 0, "grants": 0, "maps": 0, "ports": 0}
    assert all(a == nothing_held for a in r["accounting_after"].values()), r
