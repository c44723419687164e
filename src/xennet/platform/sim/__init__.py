"""platform/sim: a Xen-like hypervisor emulated with processes and shared memory.

Every domain is a process; its memory, grant table and event channel ports live in one
shared-memory file per domain in a world directory; grant copies, maps and notifies run
in the caller's process against the other domain's file, like hypercalls.
"""

from .evtchn import SimEventChannels
from .grants import SimGrantMapper, SimGrantTable, SimMapping
from .memory import SimMemory
from .world import SimPlatform, SimWorld

__all__ = [
    "SimEventChannels",
    "SimGrantMapper",
    "SimGrantTable",
    "SimMapping",
    "SimMemory",
    "SimPlatform",
    "SimWorld",
]
