"""``xennet``: the command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table

console = Console() if sys.stdout.isatty() else Console(width=140)  # piped: keep tables readable


def _version_message() -> str:
    from .. import core

    why = f" ({core.unavailable})" if core.unavailable else ""
    return f"%(prog)s %(version)s, data-plane core: {core.CORE}{why}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="xennet", message=_version_message())
def main(verbose: int) -> None:
    """The Xen paravirtual network split driver, netfront and netback, in Python."""
    from .. import core

    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    if core.CORE == "pure" and not os.environ.get("XENNET_PURE"):
        # no silent fallback: said once, at every start, on stderr
        click.echo(f"xennet: running the pure-Python core: {core.unavailable}", err=True)


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


from .bench import bench  # noqa: E402 - the command group registers below main

main.add_command(bench)

from .fuzz import fuzz  # noqa: E402

main.add_command(fuzz)


def _gso_option(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    kind, _, mss = text.partition(":")
    types = {"tcpv4": 1, "tcpv6": 2}
    if kind not in types or not mss.isdigit() or not 1 <= int(mss) <= 65535:
        raise click.BadParameter(
            f"{text!r}: want tcpv4:MSS or tcpv6:MSS, e.g. tcpv4:1448", param_hint="--gso"
        )
    return types[kind], int(mss)


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


@main.command()
@click.option("--head", help="The linear head: SIZE@OFFSET[/ORDER] (OFFSET inside its compound page).")
@click.option("--frag", "frags", multiple=True, help="A frag: SIZE@OFFSET[/ORDER]; repeat for more.")
@click.option("--preset", type=click.Choice(["worst", "cork", "random"]), help="A ready-made layout.")
@click.option("--gso", help="tcpv4:MSS or tcpv6:MSS: the packet is a TCP GSO packet.")
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


@main.command()
@click.option(
    "--preset",
    type=click.Choice(["worst", "random", "cork", "linear", "mtu"]),
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
@click.option("--ip", type=click.Choice(["4", "6"]), default="4", show_default=True)
@click.option("--proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option(
    "--gso", "mss", default=0, type=click.IntRange(0, 65535), help="TCP GSO with this MSS (0 = off)."
)
@click.option(
    "--direction",
    type=click.Choice(["tx", "rx"]),
    default="tx",
    show_default=True,
    help="tx: guest -> backend through netfront; rx: backend -> guest buffers.",
)
@click.option(
    "--policy",
    type=click.Choice(["drop", "linearize", "segment", "relayout"]),
    default="linearize",
    show_default=True,
    help="netfront too-many-slots policy.",
)
@click.option("--packing", type=click.Choice(["seed", "full"]), default="full", show_default=True)
@click.option(
    "--admission", type=click.Choice(["estimate", "fit-or-wait"]), default="fit-or-wait", show_default=True
)
@click.option(
    "--data",
    type=click.Choice(["copy", "map"]),
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
            tx_limits=TxLimits(data="map" if data == "map" else "copy"),
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


@main.command()
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
def soak(packets: int, json_file: str | None, seed: int, chunk: int, rss_bound: float, hostile_every: int) -> None:
    """Long pktgen traffic under every policy while a second guest is hostile; check it all.

    Exits non-zero on any corrupted or unaccounted packet, anything held at the end, or
    private memory (RssAnon) of a domain process growing more than --rss-bound after warm-up.
    """
    from ..world.soak import SoakPlan, run_soak

    _sigterm_unwinds()  # the toolstack then kills the domains and removes the world
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


@main.command()
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


_VIF_KEYS = (
    "mac", "mtu", "queues", "policy", "packing", "admission", "data", "offloads", "grants", "poll_us",
)  # fmt: skip


def _vif_options(specs: tuple[str, ...]) -> dict[str, str]:
    """xl-style ``key=value`` vif options."""
    out: dict[str, str] = {}
    for spec in specs:
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in _VIF_KEYS:
                raise click.BadParameter(f"{item!r}: want key=value with key one of {', '.join(_VIF_KEYS)}")
            out[key] = value.strip()
    return out


@dataclass(frozen=True)
class _Drivers:
    mac: str
    mtu: int
    offloads: bool
    front: Any  # NetfrontConfig
    back: Any  # NetbackConfig
    poll_us: int = 0


def _vif_config(specs: tuple[str, ...]) -> tuple[dict[str, str], _Drivers]:
    """Parse and check xl-style vif options into the two drivers' configurations."""
    from ..netback.interface import NetbackConfig
    from ..netback.tx import TxLimits
    from ..netfront.device import NetfrontConfig
    from ..xenbus.toolstack import VifSpec

    o = _vif_options(specs)
    try:
        mtu = int(o.get("mtu", "1500"))
        queues = int(o.get("queues", "1"))
        VifSpec(mac=o.get("mac", "00:16:3e:00:00:01"), mtu=mtu)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if queues != 1:
        raise click.BadParameter("queues: only queues=1 is built so far", param_hint="queues=")
    poll = o.get("poll_us", "0")
    if not poll.isdigit() or int(poll) > 1_000_000:
        raise click.BadParameter(f"poll_us={poll}: microseconds, 0 to 1000000", param_hint="poll_us=")
    choices = {
        "policy": ("drop", "linearize", "segment", "relayout"),
        "packing": ("seed", "full"),
        "admission": ("estimate", "fit-or-wait"),
        "data": ("copy", "map"),
        "offloads": ("0", "1"),
        "grants": ("pool", "per-packet"),
    }
    for key, allowed in choices.items():
        if key in o and o[key] not in allowed:
            raise click.BadParameter(f"{key}={o[key]}: choose one of {', '.join(allowed)}")
    return o, _Drivers(
        mac=o.get("mac", "00:16:3e:00:00:01").lower(),
        mtu=mtu,
        offloads=o.get("offloads", "1") == "1",
        front=NetfrontConfig(
            slot_policy=o.get("policy", "linearize"),
            grants=o.get("grants", "pool"),  # type: ignore[arg-type]
        ),
        back=NetbackConfig(
            tx_limits=TxLimits(data="map" if o.get("data") == "map" else "copy"),
            rx_packing=o.get("packing", "full"),
            rx_admission=o.get("admission", "fit-or-wait"),
        ),
        poll_us=int(poll),
    )


@main.command()
@click.argument("vif", nargs=-1)
@click.option("--check", is_flag=True, help="Run ping and iperf3 across the link and a veth pair, then exit.")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 20), help="With --check.")
@click.option(
    "--seconds", default=3, show_default=True, type=click.IntRange(1, 60), help="iperf3 time per run."
)
@click.option("--pcap-guest", type=click.Path(dir_okay=False), help="Write what crosses the guest's end.")
@click.option("--pcap-host", type=click.Path(dir_okay=False), help="Write what crosses the backend's end.")
@click.option("--json", "as_json", is_flag=True, help="With --check: print the figures as JSON.")
@click.option(
    "--chaos",
    type=click.FloatRange(1, 3600),
    help="For SECONDS kill -9 either end at random during a hashed TCP transfer, restart it; print JSON.",
)
@click.option("--chaos-kills", type=click.IntRange(1), help="With --chaos: stop after this many kills.")
@click.option("--seed", type=int, help="With --chaos: which end dies when.")
def link(
    vif: tuple[str, ...],
    check: bool,
    runs: int,
    seconds: int,
    pcap_guest: str | None,
    pcap_host: str | None,
    as_json: bool,
    chaos: float | None,
    chaos_kills: int | None,
    seed: int | None,
) -> None:
    """A paravirtual link between two network namespaces, with real Linux traffic.

    VIF options follow xl: mac=00:16:3e:xx:xx:xx mtu=1500 queues=1, plus policy=drop|linearize|
    segment|relayout, packing=seed|full, admission=estimate|fit-or-wait, data=copy|map, offloads=1|0,
    grants=pool|per-packet, poll_us=N (busy-poll each end this long before sleeping).
    """
    import statistics
    import time as _time

    from ..world.link import Link, LinkConfig, preflight

    _, drivers = _vif_config(vif)
    missing = preflight(check)
    if missing:
        raise click.ClickException("xennet link cannot run here:\n  " + "\n  ".join(missing))
    cfg = LinkConfig(
        mac=drivers.mac,
        mtu=drivers.mtu,
        offloads=drivers.offloads,
        front=drivers.front,
        back=drivers.back,
        pcap_guest=pcap_guest,
        pcap_host=pcap_host,
        poll_us=drivers.poll_us,
    )
    if as_json and not check:
        raise click.BadParameter("--json goes with --check", param_hint="--json")
    if chaos is not None and check:
        raise click.BadParameter("--chaos and --check are separate runs", param_hint="--chaos")
    as_json = as_json or chaos is not None  # chaos reports JSON only
    say = (lambda *a, **k: None) if as_json else console.print
    payload: dict[str, Any] | None = None
    t0 = _time.monotonic()
    _sigterm_unwinds()
    lk = Link(cfg)
    try:
        say(
            f"link up in {_time.monotonic() - t0:.1f} s: guest {lk.addr.guest_ns} "
            f"{lk.addr.guest_ip} <-> host {lk.addr.host_ns} {lk.addr.host_ip}"
        )
        if chaos is not None:
            from ..world.chaos import run_chaos

            payload = run_chaos(lk, chaos, seed=seed, max_kills=chaos_kills)
        elif not check:
            console.print("try:")
            for c in lk.commands():
                console.print(f"  {c}")
            console.print("Ctrl-C tears everything down.")
            try:
                while all(p.proc.is_alive() for p in (lk.guest, lk.backend)):
                    _time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        else:
            from ..world.linkcheck import VethPair, measure

            veth = VethPair(cfg.subnet, (os.getpid() + 7) % 250 + 1, cfg.mtu)
            rows: dict[str, list[Any]] = {"xennet guest->host": [], "xennet host->guest": [], "veth": []}
            try:
                for _ in range(runs):
                    rows["xennet guest->host"].append(
                        measure(lk.addr.guest_ns, lk.addr.host_ns, lk.addr.host_ip, seconds)
                    )
                    rows["xennet host->guest"].append(
                        measure(lk.addr.guest_ns, lk.addr.host_ns, lk.addr.host_ip, seconds, reverse=True)
                    )
                    rows["veth"].append(measure(veth.a.name, veth.b.name, veth.ip_b, seconds))
            finally:
                veth.close()
            if as_json:
                payload = _link_json(rows, runs, seconds, drivers.poll_us)
                return
            t = Table(title=f"xennet link --check: medians of {runs} run(s), iperf3 {seconds} s")
            for col in ("path", "Gbit/s", "RTT ms", "vs veth (Gbit/s)", "errors"):
                t.add_column(col)
            ref = [f.gbit_s for f in rows["veth"] if f.gbit_s]
            ref_med = statistics.median(ref) if ref else None
            for name, figs in rows.items():
                g = [f.gbit_s for f in figs if f.gbit_s is not None]
                r = [f.rtt_ms for f in figs if f.rtt_ms is not None]
                gm = statistics.median(g) if g else None
                t.add_row(
                    name,
                    f"{gm:.3f}" if gm else "-",
                    f"{statistics.median(r):.3f}" if r else "-",
                    f"{gm / ref_med:.4f}" if gm and ref_med else "-",
                    "; ".join(f.error for f in figs if f.error)[:60],
                )
            console.print(t)
    finally:
        res = lk.close()
        acct = res.get("accounting_after", {})
        say(f"torn down; held after: {acct}")
        if payload is not None:
            payload["held_after_teardown"] = acct
            click.echo(json.dumps(payload, indent=2))
            if chaos is not None and not payload["all_recovered"]:
                raise SystemExit(1)


def _link_json(rows: dict[str, list[Any]], runs: int, seconds: int, poll_us: int) -> dict[str, Any]:
    """``link --check --json``: each path's median, min and max, and the runs' errors."""
    import statistics

    def spread(xs: list[float]) -> dict[str, float] | None:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else None

    out: dict[str, Any] = {"runs": runs, "seconds": seconds, "poll_us": poll_us, "paths": {}}
    for name, figs in rows.items():
        out["paths"][name] = {
            "gbit": spread([f.gbit_s for f in figs if f.gbit_s is not None]),
            "rtt_ms": spread([f.rtt_ms for f in figs if f.rtt_ms is not None]),
            "errors": [f.error for f in figs if f.error],
        }
    return out


# -- a real Xen host ---------------------------------------------------------------------------


@main.group()
def xen() -> None:
    """Run xennet's drivers on a real Xen host, against the kernel's or each other."""


def _sigterm_unwinds() -> None:
    """SIGTERM unwinds this process like Ctrl-C, so its namespaces, TAPs, domain processes and
    world are torn down; a process forked from it later just exits, as with no handler."""
    import signal

    parent = os.getpid()

    def on_term(_signum: int, _frame: object) -> None:
        if os.getpid() != parent:
            os._exit(143)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)


def _stop_flag() -> Any:
    """True once SIGTERM or SIGINT arrived: the drivers then close in order."""
    import signal

    stopped: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: bool(stopped)


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    for name, vif in result.get("vifs", {}).items():
        console.print(_counter_table(f"{name} ({vif['state']})", vif["stats"]))
    if "stats" in result:
        console.print(_counter_table(f"netfront ({result['state']})", result["stats"]))
    console.print(f"held at exit: {result.get('accounting')}")


def _xen_errors() -> tuple[type[BaseException], ...]:
    from ..platform.base import PlatformError
    from ..world.xenhost import XenHostError
    from ..xenstore.errors import XenstoreError

    return (PlatformError, XenHostError, XenstoreError, OSError)


@xen.command("netback")
@click.argument("vif", nargs=-1)
@click.option("--kind", default="vif", show_default=True, help="Serve <dom>/backend/KIND (e.g. pyvif).")
@click.option("--tap-prefix", default="xnb", show_default=True, help="vif D.H goes to TAP <prefix>D.H.")
@click.option("--address", help="ADDR/PREFIX for the first vif's TAP.")
@click.option("--bridge", help="Enslave each TAP to this bridge (a vif's own `bridge` key wins).")
@click.option("--pcap", type=click.Path(dir_okay=False), help="Write what crosses the backend's end.")
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON at exit.")
def xen_netback(
    vif: tuple[str, ...],
    kind: str,
    tap_prefix: str,
    address: str | None,
    bridge: str | None,
    pcap: str | None,
    as_json: bool,
) -> None:
    """Be the backend of every vif under this domain's backend/KIND until SIGTERM/SIGINT.

    VIF options: packing=seed|full admission=estimate|fit-or-wait data=copy|map offloads=1|0 mtu=N.
    """
    from ..world.xenhost import NetbackHostConfig, run_netback

    _, drivers = _vif_config(vif)
    if not kind.replace("-", "").isalnum():
        raise click.BadParameter(f"{kind!r}: a xenstore directory name", param_hint="--kind")
    cfg = NetbackHostConfig(
        kind=kind,
        tap_prefix=tap_prefix,
        address=address,
        bridge=bridge,
        mtu=drivers.mtu,
        offloads=drivers.offloads,
        back=drivers.back,
        pcap=pcap,
    )
    try:
        result = run_netback(cfg, _stop_flag())
    except _xen_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    _report(result, as_json)


@xen.command("netfront")
@click.argument("vif", nargs=-1)
@click.option("--handle", default=0, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tap", "tap_name", default="xnf0", show_default=True, help="The TAP the guest's stack uses.")
@click.option("--address", help="ADDR/PREFIX for the TAP.")
@click.option("--pcap", type=click.Path(dir_okay=False), help="Write what crosses the frontend's end.")
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON at exit.")
def xen_netfront(
    vif: tuple[str, ...], handle: int, tap_name: str, address: str | None, pcap: str | None, as_json: bool
) -> None:
    """Be the frontend of this domU's vif HANDLE (load no xen-netfront) until SIGTERM/SIGINT.

    VIF options: policy=drop|linearize|segment|relayout offloads=1|0 mtu=N grants=pool|per-packet.
    """
    from ..world.serve import TapSpec
    from ..world.xenhost import NetfrontHostConfig, run_netfront

    _, drivers = _vif_config(vif)
    tap = TapSpec(tap_name, None, address, drivers.mtu, drivers.offloads)
    cfg = NetfrontHostConfig(handle=handle, tap=tap, front=drivers.front, pcap=pcap)
    try:
        result = run_netfront(cfg, _stop_flag())
    except _xen_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    _report(result, as_json)


@xen.command("attach")
@click.argument("domid", type=click.IntRange(1, 0x7FEF))
@click.argument("vif", nargs=-1)
@click.option("--handle", default=0, show_default=True, type=click.IntRange(0, 65535))
@click.option("--kind", default="vif", show_default=True, help="The backend directory kind.")
@click.option("--bridge", help="Written as the vif's `bridge` key.")
def xen_attach(domid: int, vif: tuple[str, ...], handle: int, kind: str, bridge: str | None) -> None:
    """From dom0: create vif HANDLE of domain DOMID with libxl's keys (mac= mtu=)."""
    from ..world.xenhost import attach
    from ..xenbus.toolstack import VifSpec

    _, drivers = _vif_config(vif)
    try:
        paths = attach(domid, handle, kind, VifSpec(mac=drivers.mac, mtu=drivers.mtu, bridge=bridge))
    except _xen_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{paths.frontend} <-> {paths.backend}")


@xen.command("detach")
@click.argument("domid", type=click.IntRange(1, 0x7FEF))
@click.option("--handle", default=0, show_default=True, type=click.IntRange(0, 65535))
@click.option("--kind", default="vif", show_default=True)
def xen_detach(domid: int, handle: int, kind: str) -> None:
    """From dom0: take vif HANDLE of DOMID offline and remove both directories."""
    from ..world.xenhost import detach

    try:
        detach(domid, handle, kind)
    except _xen_errors() as exc:
        raise click.ClickException(str(exc)) from exc


def _register_xenlab() -> None:
    from ..xenlab.cli import register

    register(main)


_register_xenlab()

if __name__ == "__main__":
    main()
