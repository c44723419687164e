"""Xen-in-QEMU lab: real Xen 4.17 + Debian dom0 under qemu-system-x86_64 (TCG).

``build(workdir)`` makes the images (cached), ``up(workdir)`` boots them and returns a :class:`Lab`
whose ``run(cmd, timeout) -> (rc, output)`` executes shell commands in dom0; ``Lab.down()`` stops it.
"""

from __future__ import annotations

from .build import BuildError, BuildResult, build
from .cli import register
from .lab import Lab, LabError, LabTimeout, up
from .preflight import Problem, default_workdir, preflight_build, preflight_up

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
