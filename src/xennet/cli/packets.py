"""``xennet layout`` and ``xennet pktgen``: packet layouts through the tx policies and rx packings."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from .choices import (
    ADMISSIONS,
    DIRECTIONS,
    GSO_TYPES,
    IP_VERSIONS,
    LAYOUT_PRESETS,
    PACKINGS,
    PROTOS,
    SLOT_POLICIES,
    TX_DATA,
    choice,
)
from .common import console


def _gso_option(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    kind, _, mss = text.partition(":")
    if kind not in GSO_TYPES or not mss.isdigit() or not 1 <= int(mss) <= 65535:
        want = " or ".join(f"{k}:MSS" for k in GSO_TYPES)
        example = f"{next(iter(GSO_TYPES))}:1448"
        raise click.BadParameter(f"{text!r}: want {want}, e.g. {example}", param_hint="--gso")
    return GSO_TYPES[kind], int(mss)


def _layout_from(head: str | None, frags: tuple[str, ...], preset: str | None) -> tuple[Any, ...]:
    from ..packet.skb import LayoutError, validate_layout
    from ..ports.pktgen import parse_piece, preset_layouts

    try:
        if preset:
            if head or frags:
                raise click.UsageError("give --preset or --head/--frag, not both")
            layout = next(iter(preset_layouts(preset, 1, 1)))
        else:
            if not head:
                raise click.UsageError("--head SIZE@OFFSET is required (or --preset)")
            layout = tuple(parse_piece(t) for t in (head, *frags))
        validate_layout(layout)
    except LayoutError as exc:
        raise click.BadParameter(str(exc)) from None
    return layout


@click.command()
@click.option("--head", help="The linear head: SIZE@OFFSET[/ORDER] (OFFSET inside its compound page).")
@click.option("--frag", "frags", multiple=True, help="A frag: SIZE@OFFSET[/ORDER]; repeat for more.")
@click.option("--preset", type=choice(LAYOUT_PRESETS), help="A ready-made layout.")
@click.option("--gso", help=f"{' or '.join(f'{k}:MSS' for k in GSO_TYPES)}: the packet is a TCP GSO packet.")
@click.option("--max-slots", default=18, show_default=True, type=click.IntRange(1, 256))
@click.option("--json", "as_json", is_flag=True)
def layout(
    head: str | None,
    frags: tuple[str, ...],
    preset: str | None,
    gso: str | None,
    max_slots: int,
    as_json: bool,
) -> None:
    """What each tx policy and each rx packing does with one packet layout (no world needed)."""
    from ..analysis.layout import analyze

    lay = _layout_from(head, frags, preset)
    g = _gso_option(gso)
    try:
        out = analyze(lay, g, max_slots)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    t = Table(title=f"{out['length']} bytes, {out['tx_slots']} tx slots (limit {max_slots})")
    for col in ("tx policy", "packets", "slots per packet", "bytes copied", "outcome"):
        t.add_column(col)
    for name, r in out["strategies"].items():
        t.add_row(
            name,
            str(r["packets"]),
            " ".join(map(str, r["slots"])) or "-",
            f"{r['bytes_copied']:,}",
            r["reason"],
        )
    console.print(t)
    rx = Table(title="guest rx packing")
    for col in ("packing", "buffers", "slots", "estimate"):
        rx.add_column(col)
    for name, r in out["rx"].items():
        rx.add_row(name, str(r["buffers"]), str(r["slots"]), str(r["estimate"]))
    console.print(rx)


@click.command()
@click.option(
    "--preset",
    type=choice(LAYOUT_PRESETS),
    default="random",
    show_default=True,
    help="Layout family (ignored with --head).",
)
@click.option("--head", help="A fixed layout instead of a preset: SIZE@OFFSET[/ORDER].")
@click.option("--frag", "frags", multiple=True, help="With --head: a frag SIZE@OFFSET[/ORDER].")
@click.option("--count", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option(
    "--rate", default=0.0, show_default=True, type=click.FloatRange(0), help="Packets/s, 0 = flat out."
)
@click.option("--ip", type=choice(IP_VERSIONS), default="4", show_default=True)
@click.option("--proto", type=choice(PROTOS), default="tcp", show_default=True)
@click.option(
    "--gso", "mss", default=0, type=click.IntRange(0, 65535), help="TCP GSO with this MSS (0 = off)."
)
@click.option(
    "--direction",
    type=choice(DIRECTIONS),
    default="tx",
    show_default=True,
    help="tx: guest -> backend through netfront; rx: backend -> guest buffers.",
)
@click.option(
    "--policy",
    type=choice(SLOT_POLICIES),
    default="linearize",
    show_default=True,
    help="netfront too-many-slots policy.",
)
@click.option("--packing", type=choice(PACKINGS), default="full", show_default=True)
@click.option("--admission", type=choice(ADMISSIONS), default="fit-or-wait", show_default=True)
@click.option(
    "--data",
    type=choice(TX_DATA),
    default="copy",
    show_default=True,
    help="netback tx: grant-copy or map the guest's pages.",
)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
def pktgen(
    preset: str,
    head: str | None,
    frags: tuple[str, ...],
    count: int,
    rate: float,
    ip: str,
    proto: str,
    mss: int,
    direction: str,
    policy: str,
    packing: str,
    admission: str,
    data: str,
    seed: int,
    as_json: bool,
) -> None:
    """Send real TCP/UDP packets with chosen frag layouts through a sim world; verify every byte."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..netback.interface import NetbackConfig
    from ..netback.tx import TxLimits
    from ..netfront.device import NetfrontConfig
    from ..ports.pktgen import TrafficSpec, preset_layouts
    from ..world.pktgen_run import PktgenJob, run_pktgen

    if head:
        layouts = (_layout_from(head, frags, None),) * count
    else:
        layouts = tuple(preset_layouts(preset, count, seed))
    if mss and proto != "tcp":
        raise click.BadParameter("GSO needs --proto tcp", param_hint="--gso")
    spec = TrafficSpec(ip=int(ip), proto=proto, mss=mss, seed=seed)  # type: ignore[arg-type]
    job = PktgenJob(
        layouts,
        spec,
        direction,  # type: ignore[arg-type]
        rate,
        NetfrontConfig(slot_policy=policy),
        NetbackConfig(
            tx_limits=TxLimits(data=data),  # type: ignore[arg-type]  # a TX_DATA choice
            rx_packing=packing,
            rx_admission=admission,
        ),
    )
    if as_json:
        r = run_pktgen(job)
    else:
        with Progress(
            TextColumn("pktgen {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{direction} {preset if not head else 'fixed'}", total=count)
            r = run_pktgen(job, on_progress=lambda n: bar.update(task, completed=n))
    s = r.summary()
    if as_json:
        click.echo(json.dumps(s, indent=2, default=str))
    else:
        t = Table(
            title=f"pktgen {direction}: {count} x {preset if not head else 'fixed'} "
            f"({proto}/ipv{ip}{f', gso {mss}' if mss else ''}), policy {policy}, packing {packing}, "
            f"admission {admission}, data {data}",
            show_header=False,
        )
        for k in ("packets_generated", "packets_on_ring", "frames_verified"):
            t.add_row(k, str(s[k]))
        t.add_row("packets/s", f"{s['pps']:,.0f}")
        t.add_row("Gbit/s (payload)", f"{s['gbit_s']:.3f}")
        t.add_row("slots/packet", f"{s['slots_per_packet']:.2f}")
        t.add_row("bytes copied (tx policies)", f"{s['bytes_copied']:,}")
        for k, v in s["policy"].items():
            t.add_row(f"policy {k}", str(v))
        for k, v in s["drops"].items():
            t.add_row(f"drop/error {k}", str(v))
        for d, a in s["accounting_after"].items():
            t.add_row(f"d{d} held after", ", ".join(f"{k} {v}" for k, v in a.items()))
        console.print(t)
        for p in s["problems"]:
            console.print(f"[red]PROBLEM[/red] {p}")
    sys.exit(1 if s["problems"] else 0)
