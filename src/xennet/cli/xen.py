"""``xennet xen ...``: xennet's drivers on a real Xen host, against the kernel's or each other."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import console, counter_table, stop_flag
from .vif import vif_config, vif_help


@click.group()
def xen() -> None:
    """Run xennet's drivers on a real Xen host, against the kernel's or each other."""


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    for name, vif in result.get("vifs", {}).items():
        console.print(counter_table(f"{name} ({vif['state']})", vif["stats"]))
    if "stats" in result:
        console.print(counter_table(f"netfront ({result['state']})", result["stats"]))
    console.print(f"held at exit: {result.get('accounting')}")


def _xen_errors() -> tuple[type[BaseException], ...]:
    from ..platform.base import PlatformError
    from ..world.xen.host import XenHostError
    from ..xenstore.errors import XenstoreError

    return (PlatformError, XenHostError, XenstoreError, OSError)


@xen.command(
    "netback",
    help=f"""Be the backend of every vif under this domain's backend/KIND until SIGTERM/SIGINT.

    VIF options: {vif_help("packing", "admission", "data", "offloads")}, mtu=N.
    """,
)
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
    from ..world.xen.host import NetbackHostConfig, run_netback

    _, drivers = vif_config(vif)
    try:
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
    except ValueError as exc:  # only --kind is not checked by vif_config
        raise click.BadParameter(str(exc), param_hint="--kind") from None
    try:
        result = run_netback(cfg, stop_flag())
    except _xen_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    _report(result, as_json)


@xen.command(
    "netfront",
    help=f"""Be the frontend of this domU's vif HANDLE (load no xen-netfront) until SIGTERM/SIGINT.

    VIF options: {vif_help("policy", "offloads", "grants")}, mtu=N.
    """,
)
@click.argument("vif", nargs=-1)
@click.option("--handle", default=0, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tap", "tap_name", default="xnf0", show_default=True, help="The TAP the guest's stack uses.")
@click.option("--address", help="ADDR/PREFIX for the TAP.")
@click.option("--pcap", type=click.Path(dir_okay=False), help="Write what crosses the frontend's end.")
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON at exit.")
def xen_netfront(
    vif: tuple[str, ...], handle: int, tap_name: str, address: str | None, pcap: str | None, as_json: bool
) -> None:
    from ..world.host.serve import TapSpec
    from ..world.xen.host import NetfrontHostConfig, run_netfront

    _, drivers = vif_config(vif)
    tap = TapSpec(tap_name, None, address, drivers.mtu, drivers.offloads)
    cfg = NetfrontHostConfig(handle=handle, tap=tap, front=drivers.front, pcap=pcap)
    try:
        result = run_netfront(cfg, stop_flag())
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
    from ..world.xen.host import attach
    from ..xenbus.toolstack import VifSpec

    _, drivers = vif_config(vif)
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
    from ..world.xen.host import detach

    try:
        detach(domid, handle, kind)
    except _xen_errors() as exc:
        raise click.ClickException(str(exc)) from exc
