"""The command line: usage errors are messages, never tracebacks; the demo runs for real."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def xennet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xennet.cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        ("demo", "--packts", "5"),
        ("bogus",),
        ("demo", "--packets", "zero"),
        ("demo", "--packets", "0"),
        ("demo", "--mac", "zz:zz"),
        ("xenstored",),
        ("bench", "small", "--runs", "-1"),
    ],
)
def test_typos_get_usage_not_a_traceback(args: tuple[str, ...]) -> None:
    r = xennet(*args)
    assert r.returncode == 2
    assert "Usage:" in r.stderr or "Error:" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.slow
def test_demo_json_reports_verified_counters() -> None:
    r = xennet("demo", "--packets", "300", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["problems"] == []
    assert out["guest"]["stats"]["tx_completed"] == 300 and out["guest"]["received"] == 300
    assert out["backend"]["received"] == 300 and out["backend"]["stats"]["rx_packets"] == 300
    assert out["tx_pps"] > 0 and out["rx_pps"] > 0


@pytest.mark.slow
def test_demo_table() -> None:
    r = xennet("demo", "--packets", "100")
    assert r.returncode == 0, r.stderr
    assert "every byte checked" in r.stdout and "OK" in r.stdout
    assert "pages 0, grants 0, maps 0, ports 0" in r.stdout
