"""``xennet link``: a paravirtual link between two network namespaces, with real Linux traffic."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.table import Table

from .common import console, sigterm_unwinds
from .vif import vif_config, vif_help


@click.command(
    help=f"""A paravirtual link between two network namespaces, with real Linux traffic.

    VIF options follow xl: mac=00:16:3e:xx:xx:xx mtu=1500 queues=1, plus {vif_help()},
    poll_us=N (busy-poll each end this long before sleeping), tx_batch=N (ring entries netback
    answers per pass, 1..256; default 64).  guests=N (2 or more) makes it
    ``xennet switch N``: N guests on a learning bridge in the driver domain.
    """
)
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
    import time as _time

    from ..world.link import Link, LinkConfig, preflight

    guests = [item for spec in vif for item in spec.split(",") if item.strip().startswith("guests=")]
    if guests:
        from .switch import run_switch

        n = guests[-1].split("=", 1)[1].strip()
        if not n.isdigit() or int(n) < 2:
            raise click.BadParameter(f"{guests[-1]}: guests=N wants N >= 2 (one guest is the plain link)")
        if pcap_guest or pcap_host or chaos is not None:
            raise click.BadParameter("guests=N takes --check, --runs, --seconds and --json only")
        rest = tuple(
            ",".join(i for i in spec.split(",") if not i.strip().startswith("guests=")) for spec in vif
        )
        run_switch(int(n), tuple(s for s in rest if s), check, runs, seconds, as_json)
        return
    _, drivers = vif_config(vif)
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
    sigterm_unwinds()
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
            from ..world.linkcheck import VethPair, check_json, measure, summarize

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
                payload = check_json(rows, runs, seconds, drivers.poll_us)
                return
            t = Table(title=f"xennet link --check: medians of {runs} run(s), iperf3 {seconds} s")
            for col in ("path", "Gbit/s", "RTT ms", "vs veth (Gbit/s)", "errors"):
                t.add_column(col)
            for name, p in summarize(rows).items():
                t.add_row(
                    name,
                    f"{p.gbit.median:.3f}" if p.gbit and p.gbit.median else "-",
                    f"{p.rtt_ms.median:.3f}" if p.rtt_ms else "-",
                    f"{p.vs_reference:.4f}" if p.vs_reference else "-",
                    "; ".join(p.errors)[:60],
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
