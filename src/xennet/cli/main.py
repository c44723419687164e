"""``xennet``: the command line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="xennet")
def main(verbose: int) -> None:
    """The Xen paravirtual network split driver, netfront and netback, in Python."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Unix socket to listen on (clients use XENSTORED_PATH=this).",
)
def xenstored(socket_path: str) -> None:
    """Run the embedded xenstored on SOCKET until interrupted."""
    from ..xenstore import daemon

    daemon.run(socket_path)


def _counter_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        if isinstance(value, dict):
            if not value:
                table.add_row(key, "0")
            for reason, n in value.items():
                table.add_row(f"{key} [{reason}]", str(n))
        else:
            table.add_row(key, str(value))
    return table


@main.command()
@click.option(
    "--packets",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="Frames in each direction.",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--mac", default="00:16:3e:00:00:01", show_default=True, help="The vif's MAC (xl's mac=).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo(packets: int, seed: int, mac: str, as_json: bool) -> None:
    """Run xenstored, a backend and a guest as processes; send frames both ways; check every byte."""
    from ..world.demo import run_demo
    from ..xenbus.toolstack import VifSpec

    try:
        VifSpec(mac=mac)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mac") from None
    r = run_demo(packets, packets, seed, mac)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": r.ok,
                    "problems": r.problems,
                    "guest": r.guest,
                    "backend": r.backend,
                    "accounting_after": r.accounting_after,
                    "tx_pps": r.pps("tx"),
                    "rx_pps": r.pps("rx"),
                },
                indent=2,
                default=str,
            )
        )
    else:
        console.print(
            _counter_table(
                f"netfront (guest d1) — states {' → '.join(r.guest['transitions'])}", r.guest["stats"]
            )
        )
        console.print(
            _counter_table(
                f"netback {r.backend.get('vif', '')} (d0) — states "
                f"{' → '.join(r.backend.get('transitions', []))}",
                r.backend.get("stats", {}),
            )
        )
        summary = Table(title="verification", show_header=False)
        summary.add_row(
            "guest → backend",
            f"{r.backend['received']}/{packets} frames, "
            f"{'every byte checked' if not r.backend['mismatches'] else r.backend['mismatches']}",
        )
        summary.add_row(
            "backend → guest",
            f"{r.guest['received']}/{packets} frames, "
            f"{'every byte checked' if not r.guest['mismatches'] else r.guest['mismatches']}",
        )
        tx, rx = r.pps("tx"), r.pps("rx")
        summary.add_row("tx packets/s", f"{tx:,.0f}" if tx else "-")
        summary.add_row("rx packets/s", f"{rx:,.0f}" if rx else "-")
        for domid, acct in r.accounting_after.items():
            summary.add_row(f"d{domid} held after disconnect", ", ".join(f"{k} {v}" for k, v in acct.items()))
        console.print(summary)
        for p in r.problems:
            console.print(f"[red]PROBLEM[/red] {p}")
        console.print("[green]OK[/green]" if r.ok else "[red]FAILED[/red]")
    sys.exit(0 if r.ok else 1)


@main.group()
def bench() -> None:
    """Benchmarks: medians over several runs."""


@bench.command("first-packet")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--packets", default=5000, show_default=True, type=click.IntRange(10, 10_000_000))
@click.option("--json", "as_json", is_flag=True)
def bench_first_packet(runs: int, packets: int, as_json: bool) -> None:
    """Packets/s of the single-slot path across processes, median of RUNS, beside a socketpair."""
    from ..world.bench import first_packet

    try:
        b = first_packet(runs, packets)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    med = b.medians
    if as_json:
        click.echo(
            json.dumps(
                {
                    "runs": runs,
                    "packets": packets,
                    "tx_pps": b.tx_pps,
                    "rx_pps": b.rx_pps,
                    "socketpair_pps": b.peer_pps,
                    **{f"{k}_median": v for k, v in med.items()},
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"first-packet path, {packets} frames each way, {runs} runs")
    table.add_column("path")
    table.add_column("median pps", justify="right")
    table.add_column("vs socketpair", justify="right")
    table.add_column("runs")
    peer = med["socketpair_pps"]
    for label, key, runs_ in (
        ("guest tx (netfront→netback)", "tx_pps", b.tx_pps),
        ("guest rx (netback→netfront)", "rx_pps", b.rx_pps),
        ("unix socketpair, 2 processes", "socketpair_pps", b.peer_pps),
    ):
        table.add_row(
            label, f"{med[key]:,.0f}", f"{med[key] / peer:.2f}", " ".join(f"{x:,.0f}" for x in runs_)
        )
    console.print(table)


if __name__ == "__main__":
    main()
