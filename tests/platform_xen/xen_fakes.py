"""Stand-ins for the kernel side of the Xen devices, for tests on a machine without Xen.

Each fake subclasses the real device wrapper and replaces only its ``_ioctl`` (and
``mmap``): the argument buffers it sees are the ones the real code packed, and it decodes
them with its own struct formats written from the C headers (not with ``uapi``'s codecs),
so a packing mistake shows up as a wrong result.  Grant copy reads the segment array
from the address the real code put in the ioctl argument, as the kernel does.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct

from xennet.abi.grant_table import (
    GNTCOPY_dest_gref,
    GNTCOPY_source_gref,
    GNTST_bad_gntref,
    GNTST_general_error,
    GNTST_okay,
)
from xennet.platform.xen import uapi
from xennet.platform.xen.device import XenDeviceError
from xennet.platform.xen.evtchn import Evtchn
from xennet.platform.xen.gntalloc import Gntalloc
from xennet.platform.xen.gntdev import Gntdev

PAGE = 4096

# the C layouts, spelled out independently of uapi's CStruct declarations (x86_64)
ALLOC_GREF = struct.Struct("<HHIQ")  # domid, flags, count, index; then u32 gref_ids[count]
DEALLOC_GREF = struct.Struct("<QI4x")
MAP_GRANT_REF_HEAD = struct.Struct("<IIQ")  # count, pad, index; then {u32 domid, u32 ref}[count]
GRANT_REF = struct.Struct("<II")
UNMAP_GRANT_REF = struct.Struct("<QII")
GRANT_COPY = struct.Struct("<I4xQ")  # unsigned int count; pointer to segments
SEGMENT_SIZE = 24
SIDE_FOREIGN = struct.Struct("<IHH")  # ref, offset, domid (or a void * in the same 8 bytes)
SEGMENT_TAIL = struct.Struct("<HHh")  # len, flags, status at offset 16
PORT = struct.Struct("<I")
INTERDOMAIN = struct.Struct("<II")


def _null_fd() -> int:
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


class FakeGntalloc(Gntalloc):
    """gntalloc's kernel side: zeroed anonymous pages and made-up grant refs."""

    def __init__(self, limit: int = 64, first_gref: int = 1000) -> None:
        super().__init__(fd=_null_fd())
        self.limit = limit
        self.next_gref = first_gref
        self.next_index = 0
        self.allocs: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # index -> (domid, flags, grefs)
        self.deallocs: list[tuple[int, int]] = []
        self.mmaps: list[tuple[int, int]] = []

    @property
    def in_use(self) -> int:
        return sum(len(g) for _d, _f, g in self.allocs.values())

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        if request == uapi.IOCTL_GNTALLOC_ALLOC_GREF:
            domid, flags, count, _index = ALLOC_GREF.unpack_from(arg, 0)
            if self.in_use + count > self.limit:
                raise XenDeviceError(f"{what}: No space left on device", errno=errno.ENOSPC)
            index = self.next_index
            self.next_index += count * PAGE
            grefs = tuple(range(self.next_gref, self.next_gref + count))
            self.next_gref += count
            ALLOC_GREF.pack_into(arg, 0, domid, flags, count, index)
            struct.pack_into(f"<{count}I", arg, ALLOC_GREF.size, *grefs)
            self.allocs[index] = (domid, flags, grefs)
            return 0
        if request == uapi.IOCTL_GNTALLOC_DEALLOC_GREF:
            index, count = DEALLOC_GREF.unpack_from(arg, 0)
            if index not in self.allocs or len(self.allocs[index][2]) != count:
                raise XenDeviceError(f"{what}: Invalid argument", errno=errno.EINVAL)
            del self.allocs[index]
            self.deallocs.append((index, count))
            return 0
        raise XenDeviceError(f"{what}: unexpected ioctl {request:#x}", errno=errno.ENOTTY)

    def mmap(self, index: int, count: int) -> mmap.mmap:
        if index not in self.allocs or len(self.allocs[index][2]) != count:
            raise XenDeviceError(f"gntalloc: mmap at {index:#x}: Invalid argument", errno=errno.EINVAL)
        self.mmaps.append((index, count))
        return mmap.mmap(-1, count * PAGE, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


class ForeignPage:
    """A page another domain granted us."""

    def __init__(self, fill: int = 0, readonly: bool = False) -> None:
        self.buf = ctypes.create_string_buffer(bytes([fill]) * PAGE, PAGE)
        self.readonly = readonly

    @property
    def address(self) -> int:
        return ctypes.addressof(self.buf)

    @property
    def data(self) -> bytes:
        return self.buf.raw

    def write(self, offset: int, data: bytes) -> None:
        assert 0 <= offset and offset + len(data) <= PAGE
        ctypes.memmove(self.address + offset, data, len(data))


class FakeGntdev(Gntdev):
    """gntdev's kernel side over a table of foreign grants ``(domid, ref) -> ForeignPage``.

    Maps are copies of the granted pages (no aliasing); grant copy is faithful: it checks
    segments as gntdev does (EINVAL for local-to-local or a grant side crossing a page)
    and copies through the real addresses.
    """

    def __init__(self) -> None:
        super().__init__(fd=_null_fd())
        self.grants: dict[tuple[int, int], ForeignPage] = {}
        self.maps: dict[int, tuple[tuple[int, int], ...]] = {}  # index -> ((domid, ref), ...)
        self.next_index = 0
        self.copy_calls = 0
        self.unmapped: list[tuple[int, int]] = []

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        if request == uapi.IOCTL_GNTDEV_MAP_GRANT_REF:
            count, _pad, _index = MAP_GRANT_REF_HEAD.unpack_from(arg, 0)
            refs = tuple(
                GRANT_REF.unpack_from(arg, MAP_GRANT_REF_HEAD.size + i * GRANT_REF.size) for i in range(count)
            )
            index = self.next_index
            self.next_index += count * PAGE
            self.maps[index] = refs
            MAP_GRANT_REF_HEAD.pack_into(arg, 0, count, 0, index)
            return 0
        if request == uapi.IOCTL_GNTDEV_UNMAP_GRANT_REF:
            index, count, _pad = UNMAP_GRANT_REF.unpack_from(arg, 0)
            if index not in self.maps or len(self.maps[index]) != count:
                raise XenDeviceError(f"{what}: Invalid argument", errno=errno.EINVAL)
            del self.maps[index]
            self.unmapped.append((index, count))
            return 0
        if request == uapi.IOCTL_GNTDEV_GRANT_COPY:
            self.copy_calls += 1
            count, ptr = GRANT_COPY.unpack_from(arg, 0)
            for i in range(count):
                self._copy_segment(ptr + i * SEGMENT_SIZE, what)
            return 0
        raise XenDeviceError(f"{what}: unexpected ioctl {request:#x}", errno=errno.ENOTTY)

    def _copy_segment(self, addr: int, what: str) -> None:
        raw = ctypes.string_at(addr, SEGMENT_SIZE)
        length, flags, _status = SEGMENT_TAIL.unpack_from(raw, 16)
        if not flags & (GNTCOPY_source_gref | GNTCOPY_dest_gref):
            raise XenDeviceError(f"{what}: Invalid argument (local to local)", errno=errno.EINVAL)
        ends: list[int] = []
        status = GNTST_okay
        for side, flag, write in ((0, GNTCOPY_source_gref, False), (8, GNTCOPY_dest_gref, True)):
            if flags & flag:
                ref, offset, domid = SIDE_FOREIGN.unpack_from(raw, side)
                if offset + length > PAGE:
                    raise XenDeviceError(f"{what}: Invalid argument (crosses a page)", errno=errno.EINVAL)
                page = self.grants.get((domid, ref))
                if page is None:
                    status = GNTST_bad_gntref
                    break
                if write and page.readonly:
                    status = GNTST_general_error
                    break
                ends.append(page.address + offset)
            else:
                (virt,) = struct.unpack_from("<Q", raw, side)
                ends.append(virt)
        if status == GNTST_okay:
            ctypes.memmove(ends[1], ends[0], length)
        ctypes.memmove(addr + 20, struct.pack("<h", status), 2)

    def mmap(self, index: int, count: int, writable: bool) -> mmap.mmap:
        refs = self.maps.get(index)
        if refs is None or len(refs) != count:
            raise XenDeviceError("gntdev: mmap: Invalid argument", errno=errno.EINVAL)
        pages = [self.grants.get(r) for r in refs]
        if any(p is None or (writable and p.readonly) for p in pages):
            raise XenDeviceError("gntdev: mmap: Invalid argument", errno=errno.EINVAL)
        content = b"".join(p.data for p in pages if p is not None)
        if writable:
            mm = mmap.mmap(-1, count * PAGE, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
            mm[:] = content
            return mm
        fd = os.memfd_create("granted", os.MFD_CLOEXEC)  # a PROT_READ mapping, as gntdev's is
        try:
            os.pwrite(fd, content, 0)
            return mmap.mmap(fd, count * PAGE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)


class FakeEvtchn(Evtchn):
    """evtchn's kernel side: ports are made up; ``kernel`` is the other end of a socket pair,
    where pending ports are written and unmasked ports read, in the device's format."""

    def __init__(self, first_port: int = 5) -> None:
        ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._sock = ours  # keeps the descriptor open
        super().__init__(fd=ours.fileno())
        self.next_port = first_port
        self.bound: dict[int, tuple[str, int, int]] = {}
        self.notified: list[int] = []
        self.resets = 0
        self.overflow = False

    def _ioctl(self, request: int, arg: bytearray | None, what: str) -> int:
        if request == uapi.IOCTL_EVTCHN_BIND_UNBOUND_PORT:
            assert arg is not None
            (remote,) = PORT.unpack_from(arg, 0)
            return self._new("unbound", remote, 0)
        if request == uapi.IOCTL_EVTCHN_BIND_INTERDOMAIN:
            assert arg is not None
            remote, rport = INTERDOMAIN.unpack_from(arg, 0)
            if rport == 0xDEAD:
                raise XenDeviceError(f"{what}: Invalid argument", errno=errno.EINVAL)
            return self._new("interdomain", remote, rport)
        if request in (uapi.IOCTL_EVTCHN_NOTIFY, uapi.IOCTL_EVTCHN_UNBIND):
            assert arg is not None
            (port,) = PORT.unpack_from(arg, 0)
            if port not in self.bound:
                raise XenDeviceError(f"{what}: Transport endpoint is not connected", errno=errno.ENOTCONN)
            if request == uapi.IOCTL_EVTCHN_NOTIFY:
                self.notified.append(port)
            else:
                del self.bound[port]
            return 0
        if request == uapi.IOCTL_EVTCHN_RESET:
            assert arg is None
            self.resets += 1
            self.overflow = False
            return 0
        raise XenDeviceError(f"{what}: unexpected ioctl {request:#x}", errno=errno.ENOTTY)

    def _new(self, kind: str, remote: int, rport: int) -> int:
        port = self.next_port
        self.next_port += 1
        self.bound[port] = (kind, remote, rport)
        return port

    def read_ports(self) -> list[int]:
        if self.overflow:
            raise XenDeviceError("evtchn: read: File too large", errno=errno.EFBIG)
        return super().read_ports()

    def fire(self, *ports: int) -> None:
        """The kernel reports ``ports`` pending (each as a native u32)."""
        self.kernel.sendall(b"".join(PORT.pack(p) for p in ports))

    def unmasked(self) -> list[int]:
        """The ports written back (unmasked) so far."""
        self.kernel.setblocking(False)
        data = b""
        try:
            while chunk := self.kernel.recv(4096):
                data += chunk
        except BlockingIOError:
            pass
        assert len(data) % 4 == 0
        return [PORT.unpack_from(data, i)[0] for i in range(0, len(data), 4)]

    def close(self) -> None:
        if self.fd >= 0:
            self._sock.close()
            self.fd = -1
            self.kernel.close()
