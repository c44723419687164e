"""``xennet bench``: the benchmarks, each figure a median beside its peers from the same run."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import core
from ..bench.figures import Figure

NAMES = ("small", "bulk", "rx", "link", "c", "scale")
PEERS = {  # the figure each row is compared with
    "small": "socketpair_pps",
    "bulk": "memcpy_gbit",
    "link": "veth_gbit",
}


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option(
                "--runs", default=5, show_default=True, type=click.IntRange(1, 50), help="Runs per figure."
            ),
            click.option("--quick", is_flag=True, help="Everything small, in about a minute: a smoke test."),
            click.option(
                "--json", "json_path", type=click.Path(dir_okay=False), help="Write the figures as JSON."
            ),
            click.option(
                "--plot", "plot_dir", type=click.Path(file_okay=False), help="Write PNG charts here."
            ),
            click.option(
                "--profile",
                "profile_dir",
                type=click.Path(file_okay=False),
                help="Each domain process writes a profile (pyinstrument) of its run here.",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def _run(
    names: tuple[str, ...],
    runs: int,
    quick: bool,
    json_path: str | None,
    plot_dir: str | None,
    profile_dir: str | None,
) -> None:
    from ..bench.run import BenchPlan, report, targets

    plan = BenchPlan.quick_plan() if quick else BenchPlan(runs=runs)
    if profile_dir:
        os.environ["XENNET_PROFILE_DIR"] = os.path.abspath(profile_dir)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("bench", total=len(names))

        def progress(what: str, done: float) -> None:
            i = names.index(what.split(":", 1)[0]) if what.split(":", 1)[0] in names else 0
            bar.update(task, description=f"[{core.CORE} core] {what}", completed=i + done)

        try:
            rep = report(list(names), plan, progress)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    out = Console() if os.isatty(1) else Console(width=150)
    out.print(f"core: [bold]{rep.core}[/bold]{'' if not core.unavailable else f' ({core.unavailable})'}")
    for group, figs in rep.figures.items():
        out.print(_table(group, figs))
    t = Table(title="targets", show_header=True)
    for col in ("target", "measured", "met"):
        t.add_column(col)
    for name, got, ok in targets(rep):
        t.add_row(name, got, "[green]yes[/green]" if ok else "[red]no[/red]")
    out.print(t)
    if "link" in names:
        out.print(
            "peers: veth = a veth pair between two namespaces; relay = the naive relay (one Python "
            "thread, select over two TAPs with vnet headers and offloads, os.read/os.write); split "
            "relay = the same in two processes, one TAP each, joined by a Unix SOCK_SEQPACKET "
            "socketpair (xennet's two processes without its protocol)."
        )
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rep.as_json() | {"extra": rep.extra}, f, indent=2, default=str)
    if plot_dir:
        _plots(rep.figures, plot_dir, rep.core)


def _table(group: str, figs: dict[str, Figure]) -> Table:
    peer = figs.get(PEERS.get(group, ""))
    t = Table(title=f"bench {group} ({core.CORE} core)", show_header=True)
    for col in ("figure", "median", "min", "max", "unit", f"x {peer.name if peer else '-'}"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for f in figs.values():
        fmt = "{:,.0f}" if f.unit == "pps" else "{:,.3f}"
        r = f"{f.median / peer.median:.2f}" if peer and peer.median and f is not peer else ""
        t.add_row(f.name, fmt.format(f.median), fmt.format(f.min), fmt.format(f.max), f.unit, r)
    return t


def _plots(figures: dict[str, dict[str, Figure]], out: str, core_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    for group, figs in figures.items():
        by_unit: dict[str, list[Figure]] = {}
        for f in figs.values():
            by_unit.setdefault(f.unit, []).append(f)
        for unit, fs in by_unit.items():
            fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(fs)))
            meds = [f.median for f in fs]
            err = [
                [m - f.min for m, f in zip(meds, fs, strict=True)],
                [f.max - m for m, f in zip(meds, fs, strict=True)],
            ]
            ax.barh([f.name for f in fs], meds, xerr=err, color="#4c72b0")
            ax.set_xlabel(f"{unit} (median, min..max)")
            ax.set_title(f"xennet bench {group} ({core_name} core)")
            fig.tight_layout()
            fig.savefig(os.path.join(out, f"{group}-{unit.replace('/', '_')}.png"), dpi=100)
            plt.close(fig)


@click.group("bench", invoke_without_command=True)
@_options
@click.pass_context
def bench(ctx: click.Context, /, **opts: Any) -> None:
    """Benchmarks: each figure a median of RUNS, beside its peers measured in the same run.
    Without a subcommand: all of them."""
    if ctx.invoked_subcommand is None:
        _run(NAMES, **opts)


def _sub(name: str, doc: str) -> None:
    @bench.command(name, help=doc)
    @_options
    def cmd(**opts: Any) -> None:
        _run((name,), **opts)


_sub("small", "64 B frames both ways across two domain processes, beside a socketpair and C.")
_sub("bulk", "64 KiB GSO frames both ways, beside memcpy and C.")
_sub("rx", "Backend -> guest under each rx packing.")
_sub("link", "iperf3 and ping through xennet link, beside veth and the naive relays.")
_sub("c", "The C reference: ring.h macros, request -> copy -> response, 64 B and 64 KiB.")
_sub("scale", "One backend serving 32 guests: traffic on all of them, and its RSS.")
