"""Real Linux traffic: iperf3 TCP and ping through ``xennet link``, beside a veth pair and the
naive relays (``bench/relay.py``: one process, and split in two), all measured in the same
run, each path the same way: ping first (idle RTT), then iperf3 one way, then the other."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..world.link import Link, LinkConfig
from ..world.linkcheck import PathFigures, VethPair, measure
from .figures import Figure
from .relay import RelayLink


@dataclass
class LinkFigures:
    xennet_tx: Figure  # guest -> host
    xennet_rx: Figure  # host -> guest
    veth: Figure
    relay_tx: Figure
    relay_rx: Figure
    split_tx: Figure  # the relay in two processes
    split_rx: Figure
    xennet_rtt: Figure
    xennet_rtt_busy: Figure  # with poll_us
    veth_rtt: Figure
    relay_rtt: Figure
    split_rtt: Figure
    errors: list[str]


def _take(fig: Figure, rtt: Figure | None, f: PathFigures, errors: list[str], what: str) -> None:
    if f.error:
        errors.append(f"{what}: {f.error}")
    if f.gbit_s is not None:
        fig.add(f.gbit_s)
    if rtt is not None and f.rtt_ms is not None:
        rtt.add(f.rtt_ms)


def link_figures(
    runs: int, seconds: float, cfg: LinkConfig | None = None, busy_poll_us: int = 50, progress: object = None
) -> LinkFigures:
    cfg = cfg or LinkConfig()
    figs = LinkFigures(
        Figure("xennet guest->host", "Gbit/s"),
        Figure("xennet host->guest", "Gbit/s"),
        Figure("veth", "Gbit/s"),
        Figure("relay a->b", "Gbit/s"),
        Figure("relay b->a", "Gbit/s"),
        Figure("split relay a->b", "Gbit/s"),
        Figure("split relay b->a", "Gbit/s"),
        Figure("xennet RTT", "ms"),
        Figure(f"xennet RTT, poll_us={busy_poll_us}", "ms"),
        Figure("veth RTT", "ms"),
        Figure("relay RTT", "ms"),
        Figure("split relay RTT", "ms"),
        [],
    )
    n = os.getpid() % 200 + 20
    for i in range(runs):
        veth = VethPair(216, n + i)
        try:
            _take(
                figs.veth,
                figs.veth_rtt,
                measure(veth.a.name, veth.b.name, veth.ip_b, seconds),
                figs.errors,
                "veth",
            )
        finally:
            veth.close()
        for split, tx, rx, rtt, what in (
            (False, figs.relay_tx, figs.relay_rx, figs.relay_rtt, "relay"),
            (True, figs.split_tx, figs.split_rx, figs.split_rtt, "split relay"),
        ):
            with RelayLink(218 if split else 217, n + i, split=split) as rl:
                assert rl.a is not None and rl.b is not None
                _take(tx, rtt, measure(rl.a.name, rl.b.name, rl.ip_b, seconds), figs.errors, what)
                f = measure(rl.a.name, rl.b.name, rl.ip_b, seconds, reverse=True)
                _take(rx, None, f, figs.errors, what)
        with Link(cfg) as lk:
            a = lk.addr
            f = measure(a.guest_ns, a.host_ns, a.host_ip, seconds)
            _take(figs.xennet_tx, figs.xennet_rtt, f, figs.errors, "xennet")
            f = measure(a.guest_ns, a.host_ns, a.host_ip, seconds, reverse=True)
            _take(figs.xennet_rx, None, f, figs.errors, "xennet")
        if busy_poll_us:
            with Link(replace(cfg, poll_us=busy_poll_us)) as lk:
                a = lk.addr
                f = measure(a.guest_ns, a.host_ns, a.host_ip, seconds, iperf=False)
                _take(Figure("", ""), figs.xennet_rtt_busy, f, figs.errors, "xennet busy poll")
        if callable(progress):
            progress(i + 1)
    return figs
