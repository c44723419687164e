"""``xennet switch N`` (also ``xennet link guests=N``): seed 003 forwarding as a user runs it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click
from rich.table import Table

from ..world.switch import MAX_GUESTS
from .common import console, sigterm_unwinds
from .vif import vif_config, vif_help


def run_switch(
    guests: int, vif: tuple[str, ...], check: bool, runs: int, seconds: int, as_json: bool
) -> None:
    """The command's body, shared with ``xennet link guests=N``."""
    import time as _time

    from ..netback.tx import TxLimits
    from ..world.link import preflight
    from ..world.switch import Switch, SwitchConfig, verdict
    from ..world.switch import check as run_check

    opts, drivers = vif_config(vif)
    missing = preflight(check)
    if missing:
        raise click.ClickException("xennet switch cannot run here:\n  " + "\n  ".join(missing))
    if as_json and not check:
        raise click.BadParameter("--json goes with --check", param_hint="--json")
    back = drivers.back
    if "data" not in opts:  # forwarding by grant copy unless asked otherwise
        back = replace(back, tx_limits=TxLimits(data="map"))
    try:
        cfg = SwitchConfig(
            guests=guests, mtu=drivers.mtu, offloads=drivers.offloads, front=drivers.front, back=back,
            poll_us=drivers.poll_us,
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    say = (lambda *a, **k: None) if as_json else console.print
    sigterm_unwinds()
    t0 = _time.monotonic()
    sw = Switch(cfg)
    checked: dict[str, Any] | None = None
    try:
        say(f"switch up in {_time.monotonic() - t0:.1f} s, data={cfg.back.tx_limits.data}:")
        for g in sw.guests:
            say(f"  guest {g.domid}: {g.addr.guest_ns} {g.addr.guest_ip} mac {g.mac}")
        if check:
            checked = run_check(sw, runs, seconds)
        else:
            console.print("try:")
            for c in sw.commands():
                console.print(f"  {c}")
            console.print("Ctrl-C tears everything down.")
            try:
                while sw.alive():
                    _time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    finally:
        closed = sw.close()
    if checked is None:
        say(f"torn down; held after: {closed.get('accounting_after')}")
        return
    v = verdict(checked, closed)
    if as_json:
        click.echo(json.dumps(v, indent=2))
    else:
        _print(v)
    if not v["ok"]:
        raise SystemExit(1)


def _print(v: dict[str, Any]) -> None:
    t = Table(
        title=f"xennet switch --check: {v['guests']} guests, data={v['data']}, medians of {v['runs']} run(s)"
    )
    for col in ("path", "Gbit/s (min-max)", "reverse Gbit/s", "RTT ms"):
        t.add_column(col)

    def fmt(x: dict[str, float] | None, spread: bool = False) -> str:
        if x is None:
            return "-"
        return f"{x['median']:.3f} ({x['min']:.3f}-{x['max']:.3f})" if spread else f"{x['median']:.3f}"

    for name, p in v["paths"].items():
        t.add_row(f"{name} guest 1 -> 2", fmt(p["gbit"], True), fmt(p["reverse_gbit"]), fmt(p["rtt_ms"]))
    console.print(t)
    ratio = v["vs_linux_bridge"]
    console.print(f"vs linux bridge: {ratio['gbit'] or 0:.3f}x, reverse {ratio['reverse_gbit'] or 0:.3f}x")
    pings = ", ".join(f"{k} {'-' if ms is None else f'{ms:.2f}'}" for k, ms in v["pings_ms"].items())
    console.print(f"ping between every pair (ms): {pings}")
    fwd = v["forwarding"]
    console.print(
        f"forwarded by grant copy from the sender's grant: {fwd['forwarded_bytes']:,} bytes; "
        f"staged in backend memory: {fwd['staged_bytes']:,} bytes"
    )
    for name, row in fwd["vifs"].items():
        console.print(f"  {name}: {row}")
    console.print(f"bridge: {fwd['bridge']}")
    console.print(f"held after teardown: {v['held_after_teardown']}")
    for p in v["problems"]:
        console.print(f"[red]PROBLEM[/red] {p}")
    if v["ok"]:
        console.print("OK")


@click.command(
    help=f"""Seed 003: N guests on one driver domain, joined by a learning bridge between their vifs.

    Each guest is a namespace with a TAP served by its own netfront process.  Under data=map
    (the default here) a frame from one guest is grant-copied from its grant straight into the
    other guest's buffer.  --check pings between every pair, runs iperf3 between guests 1 and 2
    both ways, measures a Linux bridge of veths in the same run, and fails unless everything
    answered and (data=map) nothing was staged in backend memory.

    VIF options (every guest's): mtu=1500, {vif_help()}, poll_us=N, tx_batch=N.
    """
)
@click.argument("guests", type=click.IntRange(2, MAX_GUESTS))
@click.argument("vif", nargs=-1)
@click.option("--check", is_flag=True, help="Ping, iperf3 and the Linux-bridge reference, then exit.")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 20), help="With --check.")
@click.option(
    "--seconds", default=3, show_default=True, type=click.IntRange(1, 60), help="iperf3 time a run."
)
@click.option("--json", "as_json", is_flag=True, help="With --check: print the verdict and figures as JSON.")
def switch(guests: int, vif: tuple[str, ...], check: bool, runs: int, seconds: int, as_json: bool) -> None:
    run_switch(guests, vif, check, runs, seconds, as_json)
