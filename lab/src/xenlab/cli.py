"""``xennet xenlab ...`` commands; the main CLI calls :func:`register`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click

from .preflight import default_workdir

_workdir_opt = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Lab directory (default $XENLAB_DIR or /var/tmp/xennet-xenlab).",
)


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _timings(t: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.1f}s" for k, v in t.items())


def register(group: click.Group) -> None:
    """Add the ``xenlab`` subgroup (preflight, build, up, run, domu, down) to ``group``."""

    @group.group()
    def xenlab() -> None:
        """Real Xen 4.17 + Debian dom0 under QEMU (TCG)."""

    @xenlab.command()
    @_workdir_opt
    def preflight(workdir: Path | None) -> None:
        """List what is missing for build and up."""
        from .preflight import blocking, preflight_build, preflight_up

        wd = workdir or default_workdir()
        b = preflight_build(wd)
        u = preflight_up(wd)
        for p in b:
            click.echo(f"build: {p}{' (build installs it)' if p.fixable else ''}")
        for p in u:
            click.echo(f"up: {p}")
        if blocking(b) or u:
            sys.exit(1)

    @xenlab.command()
    @_workdir_opt
    def build(workdir: Path | None) -> None:
        """Build (cached) the Xen, kernel, initramfs and dom0 rootfs images."""
        from .build import BuildError
        from .build import build as do_build

        try:
            r = do_build(workdir or default_workdir(), progress=_progress)
        except BuildError as e:
            raise click.ClickException(str(e)) from e
        click.echo(f"built in {r.workdir} ({r.disk_bytes / 2**20:.0f} MiB): {_timings(r.timings)}")

    @xenlab.command()
    @_workdir_opt
    @click.option("--timeout", default=240.0, show_default=True, help="Boot timeout, seconds.")
    def up(workdir: Path | None, timeout: float) -> None:
        """Boot the lab, then run each stdin line as a dom0 command until EOF; then power off."""
        from .lab import LabError
        from .lab import up as do_up

        try:
            lab = do_up(workdir or default_workdir(), timeout=timeout, progress=_progress)
        except LabError as e:
            raise click.ClickException(str(e)) from e
        with lab:
            click.echo(f"dom0 ready: {_timings(lab.timings)}", err=True)
            for line in sys.stdin:
                if not line.strip():
                    continue
                rc, out = lab.run(line.rstrip("\n"), timeout=600)
                click.echo(out, nl=False)
                click.echo(f"[rc={rc}]", err=True)

    @xenlab.command()
    @_workdir_opt
    @click.option("--timeout", default=120.0, show_default=True, help="Command timeout, seconds.")
    @click.argument("command", nargs=-1, required=True)
    def run(workdir: Path | None, timeout: float, command: tuple[str, ...]) -> None:
        """Boot the lab, run COMMAND in dom0, print its output, power off; exit with its code."""
        from .lab import LabError
        from .lab import up as do_up

        try:
            with do_up(workdir or default_workdir(), progress=_progress) as lab:
                rc, out = lab.run(" ".join(command), timeout=timeout)
        except LabError as e:
            raise click.ClickException(str(e)) from e
        click.echo(out, nl=False)
        sys.exit(rc)

    @xenlab.command()
    @_workdir_opt
    @click.option("--vif", "vifs", multiple=True, help="xl vif spec, e.g. bridge=xenbr0 (repeatable).")
    @click.option("--kfront/--no-kfront", default=True, show_default=True, help="Load xen-netfront.")
    @click.option("--memory", default=320, show_default=True, help="domU memory, MiB.")
    @click.option("--vcpus", default=1, show_default=True, help="domU virtual CPUs (1 or 2).")
    @click.option("--timeout", default=300.0, show_default=True, help="Seconds for the script to finish.")
    @click.argument("script", type=click.File("r"))
    def domu(
        workdir: Path | None,
        vifs: tuple[str, ...],
        kfront: bool,
        memory: int,
        vcpus: int,
        timeout: float,
        script: TextIO,
    ) -> None:
        """Boot the lab, run SCRIPT (a file, - for stdin) in a domU, print its console, power off."""
        from . import guest
        from .domu import done_rc
        from .lab import LabError
        from .lab import up as do_up

        text = script.read()
        try:
            with do_up(workdir or default_workdir(), progress=_progress) as lab:
                try:
                    lab.start_domu(
                        "xenlab-cli",
                        text,
                        vifs=list(vifs),
                        kernel_netfront=kfront,
                        memory_mb=memory,
                        vcpus=vcpus,
                    )
                    console = lab.wait_domu("xenlab-cli", guest.DOMU_DONE_MARKER, timeout)
                except LabError:
                    click.echo(lab.consoles(), err=True)
                    raise
        except (LabError, ValueError) as e:
            raise click.ClickException(str(e)) from e
        click.echo(console, nl=False)
        rc = done_rc(console)
        sys.exit(1 if rc is None else rc)

    @xenlab.command()
    @_workdir_opt
    def down(workdir: Path | None) -> None:
        """Kill a lab qemu left running (recorded in WORKDIR/qemu.pid)."""
        from .lab import kill_recorded

        click.echo("killed" if kill_recorded(workdir or default_workdir()) else "no lab running")
