"""``xennet report`` covers every policy the configuration offers, from the registry."""

from __future__ import annotations

from pathlib import Path

from xennet.analysis.layout import RX_PACKINGS
from xennet.analysis.report import run_report, write_report
from xennet.netfront.slotpolicy.policies import policy_names


def test_the_report_covers_every_registered_policy(tmp_path: Path) -> None:
    data = run_report(count=3, seed=1, mss=1448)
    assert sorted(data["tx"]) == sorted(policy_names())
    assert sorted(data["rx"]) == sorted(RX_PACKINGS)
    worst = {p: data["tx"][p]["worst"] for p in policy_names()}
    assert worst["drop"]["dropped"] == 1 and worst["relayout"]["dropped"] == 0
    files = write_report(data, tmp_path)
    assert files[0].name == "report.json" and len(files) >= 3
    assert all(f.stat().st_size > 0 for f in files)
