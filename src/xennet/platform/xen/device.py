"""Opening the /dev/xen character devices, and ioctls on them, with errors that say what to do.

Every failure becomes a ``PlatformError`` (``XenDeviceError`` when the kernel refused a call,
with its errno), so the layers above never see a bare ``OSError`` from here.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import mmap
import os
import threading
from collections.abc import Callable

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

# what it means when the node exists but open() says ENOENT (the driver's open refused)
OPEN_ENOENT = {
    # xenbus_file_open: no xenstore event channel yet, i.e. in dom0 xenstored has not started
    "xenbus": "the kernel has no xenstore connection yet (in dom0: is xenstored running?)",
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
        if os.path.exists(path):  # the node is there: its driver's open() said ENOENT
            why = OPEN_ENOENT.get(name, "the driver refused to open (ENOENT)")
            raise XenDeviceError(f"cannot open {path}: {why}", errno=_errno.ENOENT) from None
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


# --- mmap without a descriptor per mapping ------------------------------------------------
#
# CPython's ``mmap.mmap(fd, ...)`` dup()s ``fd`` and keeps the copy for the object's life, so
# every gntalloc allocation and every gntdev mapping would hold one more descriptor: a
# netfront's ~800 pages, or a netback mapping every tx slot, run into RLIMIT_NOFILE (1024
# by default) and mmap fails with EMFILE.  Instead, ``mmap_device`` lets Python own an
# anonymous mapping of the right size (which keeps its buffer-export checks: no munmap while
# a view is alive) and replaces its pages in place with the device's (MAP_FIXED): closing the
# Python object munmaps the device mapping, which is what the driver's vma close sees.

_MAP_FIXED = 0x10
_PROT_NONE = 0
_MAP_FIXED_NOREPLACE = 0x100000  # Linux >= 4.17, the same on x86 and Arm
_MAP_FAILED = ctypes.c_void_p(-1).value
_libc_lock = threading.Lock()
_libc: tuple[Callable[..., int | None], Callable[..., int]] | None = None
_orphans: list[mmap.mmap] = []  # placeholders whose range could not be taken back: never unmapped


def _libc_mmap() -> tuple[Callable[..., int | None], Callable[..., int]]:
    """libc's (mmap, munmap), loaded once."""
    global _libc
    with _libc_lock:
        if _libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            mm = getattr(libc, "mmap64", None) or libc.mmap
            mm.restype = ctypes.c_void_p
            mm.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int64,
            ]
            unmap = libc.munmap
            unmap.restype = ctypes.c_int
            unmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            _libc = (mm, unmap)
        return _libc


def mapping_address(mm: mmap.mmap) -> int:
    """The virtual address of a writable mmap's first byte (the ctypes view is dropped at once,
    so it does not pin the mmap open)."""
    c = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(c)
    finally:
        del c


def mmap_device(fd: int, length: int, offset: int, writable: bool) -> mmap.mmap:
    """``mmap(NULL, length, PROT_READ[|PROT_WRITE], MAP_SHARED, fd, offset)`` as a Python mmap
    object that holds no descriptor (see above); raises OSError as ``mmap.mmap`` would.

    The object itself is always writable from Python's side: for a read-only device mapping
    (``writable=False``: the pages are PROT_READ) hand out only ``memoryview(mm).toreadonly()``
    views, since a write through the object would fault."""
    placeholder = mmap.mmap(-1, length, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = mapping_address(placeholder)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    libc_mmap, libc_munmap = _libc_mmap()
    got = libc_mmap(addr, length, prot, mmap.MAP_SHARED | _MAP_FIXED, fd, offset)
    if got == addr:
        return placeholder
    err = (ctypes.get_errno() if got == _MAP_FAILED else 0) or _errno.EINVAL
    # A failed MAP_FIXED mmap leaves a hole where the placeholder was: take the range back
    # before the placeholder's munmap, which must not hit another thread's new mapping there.
    back = libc_mmap(
        addr, length, _PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED_NOREPLACE, -1, 0
    )
    if back == addr:
        placeholder.close()
    else:
        if back is not None and back != _MAP_FAILED:
            libc_munmap(back, length)  # an old kernel took NOREPLACE as a hint and mapped elsewhere
        _orphans.append(placeholder)
    raise OSError(err, os.strerror(err))
