"""The toolstack step (what libxl does for ``xl network-attach``): write both vif directories."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .paths import VifPaths
from .states import XenbusState

if TYPE_CHECKING:
    from ..xenstore.client import Transaction, XenstoreClient

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class VifSpec:
    """xl's vif options that reach xenstore."""

    mac: str = "00:16:3e:00:00:01"
    mtu: int = 1500
    bridge: str | None = None
    script: str | None = None
    trusted: bool = True

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac.lower()):
            raise ValueError(f"mac={self.mac!r}: want six hex pairs like 00:16:3e:12:34:56")
        if not 68 <= self.mtu <= 65535:
            raise ValueError(f"mtu={self.mtu}: want 68..65535")


def attach_vif(xs: XenstoreClient, paths: VifPaths, spec: VifSpec) -> None:
    """Create the backend and frontend directories with libxl's keys and permissions, atomically."""
    fe = paths.frontend
    fdom, bdom = paths.frontend_domid, paths.backend_domid
    fe_perms = [f"n{fdom}", f"r{bdom}"]

    def write(t: Transaction) -> None:
        _write_backend(t, paths, spec)
        t.write(fe, "")
        t.set_perms(fe, fe_perms)
        for key, value in (
            ("backend", paths.backend),
            ("backend-id", str(bdom)),
            ("state", str(int(XenbusState.Initialising))),
            ("handle", str(paths.handle)),
            ("mac", spec.mac.lower()),
            ("trusted", "1" if spec.trusted else "0"),
        ):
            t.write(f"{fe}/{key}", value)
        # the guest may read its MTU but not change it
        t.write(f"{fe}/mtu", str(spec.mtu))
        t.set_perms(f"{fe}/mtu", [f"n{bdom}", f"r{fdom}"])

    xs.run_transaction(write)


def _write_backend(t: Transaction, paths: VifPaths, spec: VifSpec) -> None:
    be, fdom, bdom = paths.backend, paths.frontend_domid, paths.backend_domid
    t.write(be, "")
    t.set_perms(be, [f"n{bdom}", f"r{fdom}"])
    for key, value in (
        ("frontend", paths.frontend),
        ("frontend-id", str(fdom)),
        ("online", "1"),
        ("state", str(int(XenbusState.Initialising))),
        ("mac", spec.mac.lower()),
        ("handle", str(paths.handle)),
        ("type", "vif"),
    ):
        t.write(f"{be}/{key}", value)
    if spec.bridge:
        t.write(f"{be}/bridge", spec.bridge)
    if spec.script:
        t.write(f"{be}/script", spec.script)


def attach_backend(xs: XenstoreClient, paths: VifPaths, spec: VifSpec) -> None:
    """Only the backend directory, for a new driver domain taking over a vif whose frontend
    lives on (its backend died and the toolstack removed the dead one's directory)."""
    xs.run_transaction(lambda t: _write_backend(t, paths, spec))


def detach_vif(xs: XenstoreClient, paths: VifPaths) -> None:
    """Ask the backend to go offline (it then closes), then remove both directories."""
    if xs.try_read(f"{paths.backend}/online") is not None:
        xs.write(f"{paths.backend}/online", "0")
    for path in (paths.frontend, paths.backend):
        if xs.try_read(path) is not None:
            xs.rm(path)
