"""``xennet soak`` and ``xennet report``: long checked runs, and the policies over a traffic mix."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from .common import console, sigterm_unwinds


@click.command()
@click.option("--packets", default=20_000, show_default=True, type=click.IntRange(1, 10**9))
@click.option("--json", "json_file", type=click.Path(dir_okay=False), help="Also write the report here.")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--chunk", default=500, show_default=True, type=click.IntRange(1), help="Packets a connection.")
@click.option("--rss-bound", default=16.0, show_default=True, type=click.FloatRange(0), help="MiB.")
@click.option(
    "--hostile-every",
    default=2000,
    show_default=True,
    type=click.IntRange(1),
    help="Packets of traffic per hostile round at least: the traffic waits for the hostile guest.",
)
def soak(
    packets: int, json_file: str | None, seed: int, chunk: int, rss_bound: float, hostile_every: int
) -> None:
    """Long pktgen traffic under every policy while a second guest is hostile; check it all.

    Exits non-zero on any corrupted or unaccounted packet, anything held at the end, or
    private memory (RssAnon) of a domain process growing more than --rss-bound after warm-up.
    """
    from ..world.soak import SoakPlan, run_soak

    sigterm_unwinds()  # the toolstack then kills the domains and removes the world
    plan = SoakPlan(packets, seed=seed, chunk=chunk, rss_bound_mib=rss_bound, hostile_every=hostile_every)
    last = [0.0]

    def progress(n: int) -> None:
        import time as _time

        if _time.monotonic() - last[0] >= 30:
            last[0] = _time.monotonic()
            click.echo(f"soak: {n}/{packets} packets", err=True)

    s = run_soak(plan, on_progress=progress).summary()
    if json_file:
        with open(json_file, "w") as f:
            json.dump(s, f, indent=2, default=str)
    t = Table(title=f"soak: {packets} packets, seed {seed}, {s['duration_s']:.0f} s")
    for col in ("phase", "generated", "on ring", "received", "verified", "corrupted", "policy dropped"):
        t.add_column(col)
    for name, row in s["per_phase"].items():
        dropped = sum(v for k, v in row.get("policy", {}).items() if k.endswith(":dropped"))
        t.add_row(name, *(str(row[k]) for k in ("generated", "on_ring", "received", "verified", "corrupted")),
                  str(dropped))  # fmt: skip
    console.print(t)
    h = s["hostile"]
    growth = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in s["rss_growth_bytes"].items())
    for key, value in (
        ("sent / received / verified", f"{s['sent']} / {s['received']} / {s['verified']}"),
        ("corrupted / unaccounted", f"{s['corrupted']} / {s['unaccounted']}"),
        ("packets/s", f"{s['pps']:,.0f} (of it {s['paced_s']:.1f} s waiting for the hostile guest)"),
        ("hostile rounds / disconnects", f"{h['rounds']} / {h['disconnects']} {h['disconnect_reasons']}"),
        (
            "RssAnon growth after warm-up",
            f"{growth} (bound {rss_bound} MiB, {len(s['rss_samples'])} samples)",
        ),
        ("held at the end", str(s["accounting_after"])),
    ):
        console.print(f"{key}: {value}")
    for p in s["problems"]:
        console.print(f"[red]PROBLEM[/red] {p}")
    console.print("[green]OK[/green]" if s["ok"] else "[red]FAILED[/red]")
    sys.exit(0 if s["ok"] else 1)


@click.command()
@click.option(
    "--count",
    default=200,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Layouts per family (the worst case is one).",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option(
    "--gso",
    "mss",
    default=1448,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Packets are TCPv4 GSO with this MSS (0: plain, so `segment` drops).",
)
@click.option("--max-slots", default=18, show_default=True, type=click.IntRange(1, 256))
@click.option("--out", default="xennet-report", show_default=True, type=click.Path(file_okay=False))
def report(count: int, seed: int, mss: int, max_slots: int, out: str) -> None:
    """Run every tx policy and rx packing over a traffic mix; write a table, JSON and plots."""
    from pathlib import Path

    from ..analysis.report import FAMILIES, TX_POLICIES, run_report, write_report

    data = run_report(count, seed, mss, max_slots)
    t = Table(title=f"tx policies over {count} layouts per family (limit {max_slots} slots)")
    for col in ("family", "policy", "over limit", "dropped", "packets out", "slots/pkt", "copied B/pkt"):
        t.add_column(col)
    for fam in FAMILIES:
        for pol in TX_POLICIES:
            st = data["tx"][pol][fam]
            n = max(st["packets_in"], 1)
            t.add_row(
                fam,
                pol,
                str(st["over_limit"]),
                str(st["dropped"]),
                str(st["packets_out"]),
                f"{st['slots'] / n:.1f}",
                f"{st['bytes_copied'] / n:,.0f}",
            )
    console.print(t)
    files = write_report(data, Path(out))
    console.print("wrote " + ", ".join(str(f) for f in files))
