"""``xennet demo``: xenstored, a backend and a guest as processes, frames both ways."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from .common import console, counter_table


@click.command()
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
@click.option(
    "--policies/--no-policies",
    default=True,
    show_default=True,
    help="Also run the worst case and a mixed run under each tx policy and rx packing.",
)
def demo(packets: int, seed: int, mac: str, as_json: bool, policies: bool) -> None:
    """Run xenstored, a backend and a guest as processes; send frames both ways; check every byte."""
    from ..world.demo import run_demo, run_policy_demo
    from ..xenbus.toolstack import VifSpec

    try:
        VifSpec(mac=mac)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mac") from None
    r = run_demo(packets, packets, seed, mac)
    rows = run_policy_demo(seed=seed) if policies else []
    problems = list(r.problems) + [f"{row['path']}: {p}" for row in rows for p in row["problems"]]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not problems,
                    "problems": problems,
                    "policies": rows,
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
            counter_table(
                f"netfront (guest d1) — states {' → '.join(r.guest['transitions'])}", r.guest["stats"]
            )
        )
        console.print(
            counter_table(
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
        if rows:
            pt = Table(title="the full path: the 51-slot worst case + a mixed run, every frame checked")
            for col in (
                "path",
                "generated",
                "on ring",
                "verified",
                "slots/pkt",
                "bytes copied",
                "dropped",
                "held after",
            ):
                pt.add_column(col)
            for row in rows:
                dropped = sum(v for k, v in row["policy"].items() if k.endswith(":dropped"))
                dropped += sum(row["drops"].values())
                held = sum(sum(a.values()) for a in row["accounting_after"].values())
                pt.add_row(
                    row["path"],
                    str(row["packets_generated"]),
                    str(row["packets_on_ring"]),
                    str(row["frames_verified"]),
                    f"{row['slots_per_packet']:.1f}",
                    f"{row['bytes_copied']:,}",
                    str(dropped),
                    str(held),
                )
            console.print(pt)
        for p in problems:
            console.print(f"[red]PROBLEM[/red] {p}")
        console.print("[green]OK[/green]" if not problems else "[red]FAILED[/red]")
    sys.exit(0 if not problems else 1)
