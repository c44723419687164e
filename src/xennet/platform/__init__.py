"""The hypervisor services a domain uses, shaped like the Linux Xen devices.

``base`` is the seam; ``sim`` implements it with processes and shared memory,
``xen`` (later) with /dev/xen/{gntdev,gntalloc,evtchn,xenbus}.
"""

from .base import (
    Accounting,
    CopyPtr,
    EventChannels,
    GrantCopy,
    GrantMapper,
    GrantTable,
    Mapping,
    Memory,
    Page,
    PeerGone,
    Platform,
    PlatformError,
)

__all__ = [
    "Accounting",
    "CopyPtr",
    "EventChannels",
    "GrantCopy",
    "GrantMapper",
    "GrantTable",
    "Mapping",
    "Memory",
    "Page",
    "PeerGone",
    "Platform",
    "PlatformError",
]
