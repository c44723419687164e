"""A dry run of ``xennet.platform.xen.selftest`` without Xen: one domain (0) looped back to
itself through stand-ins that alias memory the way the real devices do.

gntalloc hands out pages of one memfd (the domain's memory): the device's descriptor *is*
the memfd, so the real ``Gntalloc.mmap`` (``mmap_device``) maps them at the returned index.
gntdev maps a grant by mapping the same memfd page (MAP_FIXED, page by page), so a grant
and its mapping alias as on Xen; grant copy goes through the memfd.  The event channel
stand-in keeps Xen's and Linux's rules: a bound port fires once at bind, a port that fired
is masked until written back, a notify while masked is delivered on unmask.  xenstore is
this project's xenstored, spawned on a temporary socket (and reached as a "xenbus device"
over a second connection)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from xennet.abi.grant_table import GNTCOPY_dest_gref, GNTCOPY_source_gref, GNTST_bad_gntref, GNTST_okay
from xennet.platform.xen import device, selftest, uapi
from xennet.platform.xen.device import XenDeviceError
from xennet.platform.xen.evtchn import Evtchn
from xennet.platform.xen.gntalloc import Gntalloc
from xennet.platform.xen.gntdev import Gntdev
from xennet.platform.xen.platform import XenPlatform
from xennet.platform.xen.selftest import SELFTEST_ARENA
from xennet.platform.xen.xenbus import XenbusTransport
from xennet.xenstore import daemon
from xennet.xenstore.client import XenstoreClient

PAGE = 4096
DOMID = 0
ALLOC_GREF = struct.Struct("<HHIQ")
DEALLOC_GREF = struct.Struct("<QI4x")
MAP_HEAD = struct.Struct("<IIQ")
GRANT_REF = struct.Struct("<II")
UNMAP = struct.Struct("<QII")
COPY = struct.Struct("<I4xQ")
SEG = 24
FOREIGN = struct.Struct("<IHH")
TAIL = struct.Struct("<HHh")
U32 = struct.Struct("<I")


class Memory:
    """The domain's memory: a memfd, and the grant table entries that name its pages."""

    def __init__(self, pages: int = 512) -> None:
        self.fd = os.memfd_create("domain-memory", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, pages * PAGE)
        self.pages = pages
        self.next_slot = 0
        self.grefs: dict[int, int] = {}  # grant ref -> page slot
        self.next_gref = 8
        self.closed = False

    def read(self, slot: int, off: int, n: int) -> bytes:
        return os.pread(self.fd, n, slot * PAGE + off)

    def write(self, slot: int, off: int, data: bytes) -> None:
        os.pwrite(self.fd, data, slot * PAGE + off)


class LoopGntalloc(Gntalloc):
    def __init__(self, mem: Memory) -> None:
        super().__init__(fd=mem.fd)  # mmap at the index maps the memfd there
        self.mem = mem
        self.allocs: dict[int, list[int]] = {}

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        m = self.mem
        if request == uapi.IOCTL_GNTALLOC_ALLOC_GREF:
            domid, _flags, count, _ = ALLOC_GREF.unpack_from(arg, 0)
            assert domid == DOMID
            if m.next_slot + count > m.pages:
                raise XenDeviceError(f"{what}: No space left on device", errno=errno.ENOSPC)
            slot, m.next_slot = m.next_slot, m.next_slot + count
            m.write(slot, 0, bytes(count * PAGE))  # zeroed
            grefs = []
            for i in range(count):
                m.grefs[m.next_gref] = slot + i
                grefs.append(m.next_gref)
                m.next_gref += 1
            self.allocs[slot * PAGE] = grefs
            ALLOC_GREF.pack_into(arg, 0, domid, _flags, count, slot * PAGE)
            struct.pack_into(f"<{count}I", arg, ALLOC_GREF.size, *grefs)
            return 0
        if request == uapi.IOCTL_GNTALLOC_DEALLOC_GREF:
            index, count = DEALLOC_GREF.unpack_from(arg, 0)
            grefs = self.allocs.pop(index)
            assert len(grefs) == count
            for g in grefs:
                del m.grefs[g]
            return 0
        raise XenDeviceError(f"{what}: unexpected ioctl {request:#x}", errno=errno.ENOTTY)

    def close(self) -> None:
        if self.fd >= 0:
            self.fd = -1
            os.close(self.mem.fd)


class LoopGntdev(Gntdev):
    def __init__(self, mem: Memory) -> None:
        super().__init__(fd=os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        self.mem = mem
        self.reserved: dict[int, list[tuple[int, int]]] = {}
        self.next_index = 0

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        if request == uapi.IOCTL_GNTDEV_MAP_GRANT_REF:
            count, _pad, _ = MAP_HEAD.unpack_from(arg, 0)
            refs = [GRANT_REF.unpack_from(arg, MAP_HEAD.size + i * GRANT_REF.size) for i in range(count)]
            index, self.next_index = self.next_index, self.next_index + count * PAGE
            self.reserved[index] = refs
            MAP_HEAD.pack_into(arg, 0, count, 0, index)
            return 0
        if request == uapi.IOCTL_GNTDEV_UNMAP_GRANT_REF:
            index, count, _pad = UNMAP.unpack_from(arg, 0)
            if len(self.reserved.get(index, ())) != count:
                raise XenDeviceError(f"{what}: No such file or directory", errno=errno.ENOENT)
            del self.reserved[index]
            return 0
        if request == uapi.IOCTL_GNTDEV_GRANT_COPY:
            count, ptr = COPY.unpack_from(arg, 0)
            for i in range(count):
                self._segment(ptr + i * SEG, what)
            return 0
        raise XenDeviceError(f"{what}: unexpected ioctl {request:#x}", errno=errno.ENOTTY)

    def _slot(self, domid: int, ref: int) -> int | None:
        return self.mem.grefs.get(ref) if domid == DOMID else None

    def _segment(self, addr: int, what: str) -> None:
        raw = ctypes.string_at(addr, SEG)
        length, flags, _ = TAIL.unpack_from(raw, 16)
        if not flags & (GNTCOPY_source_gref | GNTCOPY_dest_gref):
            raise XenDeviceError(f"{what}: Invalid argument", errno=errno.EINVAL)
        sides: list[tuple[int, int] | int] = []
        status = GNTST_okay
        for off, flag in ((0, GNTCOPY_source_gref), (8, GNTCOPY_dest_gref)):
            if flags & flag:
                ref, goff, domid = FOREIGN.unpack_from(raw, off)
                if goff + length > PAGE:
                    raise XenDeviceError(f"{what}: Invalid argument", errno=errno.EINVAL)
                slot = self._slot(domid, ref)
                if slot is None:
                    status = GNTST_bad_gntref
                    break
                sides.append((slot, goff))
            else:
                sides.append(struct.unpack_from("<Q", raw, off)[0])
        if status == GNTST_okay:
            src, dst = sides
            data = self.mem.read(*src, length) if isinstance(src, tuple) else ctypes.string_at(src, length)
            if isinstance(dst, tuple):
                self.mem.write(*dst, data)
            else:
                ctypes.memmove(dst, data, length)
        ctypes.memmove(addr + 20, struct.pack("<h", status), 2)

    def mmap(self, index: int, count: int, writable: bool) -> mmap.mmap:
        refs = self.reserved.get(index)
        if refs is None or len(refs) != count:
            raise XenDeviceError("gntdev: mmap: Invalid argument", errno=errno.EINVAL)
        slots = [self._slot(d, r) for d, r in refs]
        if any(s is None for s in slots):
            raise XenDeviceError("gntdev: mmap: Invalid argument", errno=errno.EINVAL)
        placeholder = mmap.mmap(-1, count * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        base = device.mapping_address(placeholder)
        libc_mmap, _ = device._libc_mmap()
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        for i, slot in enumerate(slots):
            assert slot is not None
            got = libc_mmap(
                base + i * PAGE, PAGE, prot, mmap.MAP_SHARED | device._MAP_FIXED, self.mem.fd, slot * PAGE
            )
            assert got == base + i * PAGE
        return placeholder


class LoopEvtchn(Evtchn):
    """Ports of one domain bound to each other, with Xen's pending/mask rules."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        super().__init__(fd=self._r)
        self.peer: dict[int, int | None] = {}
        self.masked: set[int] = set()
        self.pending_bits: set[int] = set()
        self.queue: list[int] = []
        self.next_port = 3

    def _raise(self, port: int) -> None:
        if port in self.masked:
            self.pending_bits.add(port)
            return
        self.masked.add(port)
        self.queue.append(port)
        os.write(self._w, b"x")

    def _ioctl(self, request: int, arg: bytearray | None, what: str) -> int:
        if request == uapi.IOCTL_EVTCHN_BIND_UNBOUND_PORT:
            port, self.next_port = self.next_port, self.next_port + 1
            self.peer[port] = None
            return port
        if request == uapi.IOCTL_EVTCHN_BIND_INTERDOMAIN:
            assert arg is not None
            remote_dom, remote_port = struct.unpack_from("<II", arg, 0)
            if remote_dom != DOMID or self.peer.get(remote_port, -1) is not None:
                raise XenDeviceError(f"{what}: Invalid argument", errno=errno.EINVAL)
            port, self.next_port = self.next_port, self.next_port + 1
            self.peer[port], self.peer[remote_port] = remote_port, port
            self._raise(port)  # Xen sets the binding end pending
            return port
        if request in (uapi.IOCTL_EVTCHN_NOTIFY, uapi.IOCTL_EVTCHN_UNBIND):
            assert arg is not None
            (port,) = U32.unpack_from(arg, 0)
            if port not in self.peer:
                raise XenDeviceError(f"{what}: Transport endpoint is not connected", errno=errno.ENOTCONN)
            remote = self.peer[port]
            if request == uapi.IOCTL_EVTCHN_NOTIFY:
                if remote is not None:
                    self._raise(remote)
            else:
                del self.peer[port]
                if remote is not None and remote in self.peer:
                    self.peer[remote] = None
                self.masked.discard(port)
                self.pending_bits.discard(port)
            return 0
        raise XenDeviceError(f"{what}: unexpected ioctl {request:#x}", errno=errno.ENOTTY)

    def read_ports(self) -> list[int]:
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        out, self.queue = self.queue, []
        return out

    def write_ports(self, ports: Iterable[int]) -> None:
        for port in ports:
            if port in self.masked:
                self.masked.discard(port)
                if port in self.pending_bits:
                    self.pending_bits.discard(port)
                    self._raise(port)

    def close(self) -> None:
        if self.fd >= 0:
            self.fd = -1
            os.close(self._r)
            os.close(self._w)


def loop_platform(domid: int) -> XenPlatform:
    mem = Memory()
    return XenPlatform.from_devices(
        domid, LoopGntdev(mem), LoopEvtchn(), LoopGntalloc(mem), peer_domid=domid, arena_frames=SELFTEST_ARENA
    )


@pytest.fixture
def xenstored(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "xenstored.sock")
    proc = daemon.spawn(path)
    try:
        with XenstoreClient(path, timeout=5) as xs:
            xs.write("/local/domain/0/domid", "0")
        yield path
    finally:
        daemon.stop(proc)


def test_selftest_dry_run(xenstored: str, capsys: pytest.CaptureFixture[str]) -> None:
    def xenbus() -> XenbusTransport:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(xenstored)
        fd = os.dup(s.fileno())
        s.close()
        return XenbusTransport(fd=fd)

    test = selftest.Selftest(xenstored, domid=DOMID, make_platform=loop_platform, make_xenbus=xenbus)
    results = {r.name: r for r in test.run(timeout=20)}
    out = capsys.readouterr().out
    # no Xen here: the host checks fail; everything else must pass
    host_only = {"hypervisor", "gntalloc-limit"}
    failed = {n: r.detail for n, r in results.items() if r.status != "PASS" and n not in host_only}
    assert not failed, out
    assert set(results) == {name for name, _ in test.checks}
    assert "bind fired [" in results["evtchn-loopback"].detail
