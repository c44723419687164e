"""The ``xen`` platform: the seam on a real Xen host, through the Linux devices
/dev/xen/{gntdev,gntalloc,evtchn,xenbus} with ioctls (fcntl) and mmap, no compiled code.

``uapi`` declares the ioctl structs and numbers; ``gntdev``, ``gntalloc``, ``evtchn`` and
``xenbus`` wrap one device each; ``platform`` wires them into ``XenPlatform``.
"""

from .device import XenDeviceError
from .evtchn import Evtchn, XenEventChannels
from .gntalloc import Gntalloc, XenGrantTable, XenMemory
from .gntdev import Gntdev, XenGrantMapper, XenMapping
from .platform import XenPlatform, detect_domid
from .xenbus import XenbusTransport

__all__ = [
    "Evtchn",
    "Gntalloc",
    "Gntdev",
    "XenDeviceError",
    "XenEventChannels",
    "XenGrantMapper",
    "XenGrantTable",
    "XenMapping",
    "XenMemory",
    "XenPlatform",
    "XenbusTransport",
    "detect_domid",
]
