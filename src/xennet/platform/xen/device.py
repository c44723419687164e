"""Opening the /dev/xen character devices, and ioctls on them, with errors that say what to do.

Every failure becomes a ``PlatformError`` (``XenDeviceError`` when the kernel refused a call,
with its errno), so the layers above never see a bare ``OSError`` from here.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import os

from ..base import PlatformError

DEV_DIR = "/dev/xen"
SYS_HYPERVISOR_TYPE = "/sys/hypervisor/type"

# what creates each device, for the "no such device" message
PROVIDERS = {
    "gntdev": "the xen-gntdev module is not loaded (modprobe xen-gntdev)",
    "gntalloc": "the xen-gntalloc module is not loaded (modprobe xen-gntalloc)",
    "evtchn": "the xen-evtchn module is not loaded (modprobe xen-evtchn)",
    "xenbus": "the kernel has no xenbus device (CONFIG_XEN, xenbus_dev_frontend)",
}


class XenDeviceError(PlatformError):
    """The kernel refused a call on a Xen device; ``errno`` is its error number."""

    def __init__(self, message: str = "", status: int | None = None, errno: int | None = None) -> None:
        super().__init__(message, status)
        self.errno = errno

    def __reduce__(self) -> tuple[type[XenDeviceError], tuple[str, int | None, int | None]]:  # type: ignore[override]
        return (type(self), (str(self), self.status, self.errno))


def hypervisor_type(path: str = SYS_HYPERVISOR_TYPE) -> str | None:
    """What /sys/hypervisor/type says ("xen" on Xen), or None when it does not exist."""
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def missing_device_message(path: str, name: str, hv_type_path: str = SYS_HYPERVISOR_TYPE) -> str:
    """One line: which device is missing and what provides it."""
    provider = PROVIDERS.get(name, f"nothing provides {name}")
    hv = hypervisor_type(hv_type_path)
    if hv is None or hv != "xen":
        where = "no /sys/hypervisor/type" if hv is None else f"/sys/hypervisor/type is {hv!r}"
        return f"no {path}: not running on Xen ({where}), or {provider}"
    return f"no {path}: running on Xen, but {provider}"


def open_device(name: str, dev_dir: str = DEV_DIR, *, nonblocking: bool = False) -> int:
    """Open ``<dev_dir>/<name>`` read-write, close-on-exec; a PlatformError says why not."""
    path = os.path.join(dev_dir, name)
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise PlatformError(missing_device_message(path, name)) from None
    except PermissionError:
        raise PlatformError(f"cannot open {path}: permission denied (the Xen devices need root)") from None
    except OSError as e:
        raise XenDeviceError(
            f"cannot open {path}: {e.strerror} ({PROVIDERS.get(name, '')})", errno=e.errno
        ) from None


def errno_name(code: int | None) -> str:
    return _errno.errorcode.get(code or 0, str(code))


def ioctl(fd: int, request: int, arg: bytearray | None, what: str) -> int:
    """Run an ioctl whose argument buffer the kernel may update in place; returns its value."""
    try:
        if arg is None:
            return int(fcntl.ioctl(fd, request, 0))
        return int(fcntl.ioctl(fd, request, arg, True))
    except OSError as e:
        raise XenDeviceError(f"{what}: {e.strerror} ({errno_name(e.errno)})", errno=e.errno) from None
