"""``xennet``: the command line.  The root group; each command group lives in its own module."""

from __future__ import annotations

import logging
import os

import click

from .bench import bench
from .demo import demo
from .fuzz import fuzz
from .link import link
from .packets import layout, pktgen
from .soak import report, soak
from .switch import switch
from .xen import xen


def _version_message() -> str:
    from .. import core

    why = f" ({core.unavailable})" if core.unavailable else ""
    return f"%(prog)s %(version)s, data-plane core: {core.CORE}{why}"


class LazyGroup(click.Group):
    """A group whose commands are built on first use by ``load``, which adds them to the group
    it is given: ``xennet --help`` lists it from ``help`` alone, without importing the lab."""

    def __init__(self, name: str, load: str, help: str) -> None:
        super().__init__(name, help=help)
        self._load = load  # "module:function"
        self._real: click.Group | None = None

    def real(self) -> click.Group:
        if self._real is None:
            import importlib

            module, _, fn = self._load.partition(":")
            holder = click.Group()
            try:
                loaded_module = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                why = f"{exc.name} is its own package: pip install -e lab/ (scripts/install.sh does)"
                raise click.ClickException(f"{self.name}: {why}") from None
            getattr(loaded_module, fn)(holder)
            loaded = holder.commands[self.name or ""]
            assert isinstance(loaded, click.Group)
            self._real = loaded
        return self._real

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self.real().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.real().get_command(ctx, cmd_name)


XENLAB_HELP = "Real Xen 4.17 + Debian dom0 under QEMU (TCG)."  # xenlab.cli's own, which a test checks


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


for _command in (demo, bench, fuzz, layout, pktgen, soak, report, link, switch, xen):
    main.add_command(_command)
main.add_command(LazyGroup("xenlab", "xenlab.cli:register", XENLAB_HELP))

if __name__ == "__main__":
    main()
