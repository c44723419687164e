"""Xen-in-QEMU lab: real Xen 4.17 + Debian dom0 under qemu-system-x86_64 (TCG), and PV domUs in it.

``build(workdir)`` makes the images (cached), ``up(workdir)`` boots them and returns a :class:`Lab`
whose ``run(cmd, timeout) -> (rc, output)`` executes shell commands in dom0, ``start_domu`` /
``wait_domu`` / ``destroy_domu`` drive domUs; ``Lab.down()`` stops it.  ``transfer`` is a hash-checked
TCP transfer tool that runs in dom0 and domUs.

``register`` (the click commands) is imported lazily: ``python3 -m xenlab.transfer`` in a domU
(TCG, slow) should not pay for click.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .build import BuildError, BuildResult, build
from .lab import Lab, LabError, LabTimeout, up
from .preflight import Problem, default_workdir, preflight_build, preflight_up

if TYPE_CHECKING:
    from .cli import register

__all__ = [
    "BuildError",
    "BuildResult",
    "Lab",
    "LabError",
    "LabTimeout",
    "Problem",
    "build",
    "default_workdir",
    "preflight_build",
    "preflight_up",
    "register",
    "up",
]


def __getattr__(name: str) -> Any:
    if name == "register":
        return importlib.import_module(".cli", __name__).register
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
