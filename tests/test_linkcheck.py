"""``xennet link --check``'s arithmetic: medians, spreads and the ratio to veth, off the link."""

from __future__ import annotations

import pytest

from xennet.world.linkcheck import PathFigures, Spread, check_json, summarize

ROWS = {
    "xennet guest->host": [
        PathFigures(0.2, 4.0),
        PathFigures(0.4, 6.0),
        PathFigures(None, None, "iperf3 died"),
    ],
    "xennet host->guest": [PathFigures(0.3, None, "no iperf3"), PathFigures(0.5, None)],
    "veth": [PathFigures(0.01, 40.0), PathFigures(0.03, 50.0), PathFigures(0.02, 60.0)],
}


def test_medians_skip_runs_that_measured_nothing() -> None:
    s = summarize(ROWS)
    g = s["xennet guest->host"]
    assert g.gbit == Spread(5.0, 4.0, 6.0) and g.rtt_ms == Spread(pytest.approx(0.3), 0.2, 0.4)
    assert g.errors == ["iperf3 died"]
    assert g.vs_reference == pytest.approx(5.0 / 50.0)
    assert s["veth"].vs_reference == pytest.approx(1.0)


def test_no_throughput_has_no_ratio() -> None:
    s = summarize(ROWS)["xennet host->guest"]
    assert s.gbit is None and s.vs_reference is None and s.rtt_ms == Spread(0.4, 0.3, 0.5)
    assert summarize({"a": [PathFigures(1.0, 2.0)]})["a"].vs_reference is None  # no veth measured
    zero = {"a": [PathFigures(1.0, 2.0)], "veth": [PathFigures(1.0, 0.0)]}
    assert summarize(zero)["a"].vs_reference is None  # a reference of 0 Gbit/s divides nothing


def test_json_shape() -> None:
    out = check_json(ROWS, runs=3, seconds=2, poll_us=100)
    assert (out["runs"], out["seconds"], out["poll_us"]) == (3, 2, 100)
    assert list(out["paths"]) == list(ROWS)
    assert out["paths"]["veth"]["gbit"] == {"median": 50.0, "min": 40.0, "max": 60.0}
    assert out["paths"]["xennet host->guest"]["gbit"] is None
    assert out["paths"]["xennet host->guest"]["errors"] == ["no iperf3"]
