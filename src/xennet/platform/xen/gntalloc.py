"""/dev/xen/gntalloc, and the ``Memory`` and ``GrantTable`` of the xen platform built on it.

The memory/grant model
======================

Linux lets a userspace process grant only pages that gntalloc allocated for it, and
gntalloc grants each page *when it allocates it*, to one domain, writable or read-only
for the page's whole life.  The seam's ``grant_access(domid, frame, readonly)`` grants an
existing frame later.  The least-bad honest mapping:

* ``XenMemory`` is this process's memory: one *arena* of ``arena_frames`` pages mapped at
  start, from which a buddy allocator (``platform/buddy.py``) hands out pages of any
  order.  The arena is contiguous in our address space, so frame ``f`` is at
  ``base_address + f * 4096`` and ``view`` holds them all: that is what the data-plane
  kernels and gntdev's grant copy address.  With a grant peer (``grant_domid``) the arena
  is one ``IOCTL_GNTALLOC_ALLOC_GREF`` of every page, granted *writable* to that domain,
  so each frame has its own grant ref from the start; without a peer (a backend never
  grants) it is an anonymous mapping.  Frame 0 is never handed out, so a zeroed field
  never names a page.
* ``grant_access(domid, frame, readonly)`` returns the ref gntalloc made for that frame and
  counts a logical grant; ``end_access`` drops the count.  Granting one frame twice returns
  the same ref twice (both must be ended).

What gntalloc cannot express, and what this does about it:

* **Granting to a domain other than the arena's**: refused with PlatformError.
* **Read-only grants**: the arena is granted writable, so ``readonly=True`` is relaxed to a
  writable grant (counted in ``readonly_relaxed``) unless the table was made with
  ``readonly="refuse"``, which raises PlatformError instead.
* **Ending a grant**: nothing is revoked in Xen by ``end_access``; the peer keeps access to
  every arena page until the arena is given back at ``close``
  (``IOCTL_GNTALLOC_DEALLOC_GREF``; the kernel keeps the pages out of reuse until the peer
  unmaps them).  The security boundary is the arena, not the grant: it only ever holds
  this process's data for that one peer.  ``end_access`` therefore always succeeds for a
  ref in use.
* **Whether the peer maps a grant** (``is_mapped``): userspace cannot see the grant table
  entry's reading/writing bits, so it raises PlatformError.
* **Size**: gntalloc has a global page limit shared by every process of the domain (module
  parameter ``limit``, /sys/module/xen_gntalloc/parameters/limit, default 1024 pages; an
  ALLOC_GREF that would take the total past it fails with ENOSPC).  ``XenPlatform`` raises
  the limit (``ensure_gntalloc_limit``) to ``WANTED_GNTALLOC_LIMIT`` when it is lower, and
  an arena that still does not fit is halved until it does (down to ``MIN_ARENA_FRAMES``).

The arena is one ioctl and one mmap (``Gntalloc.mmap`` never spans two allocations: the
kernel's vma close walks an mmap's pages in allocation order), mapped without holding a
descriptor (``device.mmap_device``).
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
from array import array
from collections.abc import Sequence
from typing import Literal

from ..base import MAX_ORDER, PAGE_SIZE, Page, PlatformError, grant_all_or_none
from ..buddy import Buddy
from . import uapi
from .device import DEV_DIR, XenDeviceError, ioctl, mapping_address, mmap_device, open_device

_ALLOC_IN = uapi.GNTALLOC_ALLOC_GREF.codec("domid", "flags", "count")
_ALLOC_INDEX = uapi.GNTALLOC_ALLOC_GREF.codec("index")
_GREF_IDS_OFF = uapi.GNTALLOC_ALLOC_GREF.offsetof("gref_ids")
_DEALLOC = uapi.GNTALLOC_DEALLOC_GREF.codec()
_NOTIFY = uapi.GNTALLOC_UNMAP_NOTIFY.codec()
_DOMID_MAX = 0xFFFF  # gntalloc's domid is a u16

GNTALLOC_LIMIT_PARAM = "/sys/module/xen_gntalloc/parameters/limit"
GNTALLOC_DEFAULT_LIMIT = 1024  # drivers/xen/gntalloc.c: pages, all users of the domain together
# what XenPlatform asks for when it grants: a few busy vifs' worth (32 MiB of pages at most,
# and only while allocated)
WANTED_GNTALLOC_LIMIT = 8192


def read_limit(path: str = GNTALLOC_LIMIT_PARAM) -> int | None:
    """A module's ``limit`` parameter (gntalloc's by default), None when it cannot be read."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def ensure_gntalloc_limit(minimum: int, path: str = GNTALLOC_LIMIT_PARAM) -> int | None:
    """Raise gntalloc's global page limit to ``minimum`` if it is lower (root may: the
    parameter is 0644); never lowers it.  Returns the limit in force (None when unknown)."""
    current = read_limit(path)
    if current is not None and current < minimum:
        try:
            with open(path, "w") as f:
                f.write(f"{minimum}\n")
        except OSError:
            pass
        current = read_limit(path)
    return current


def pack_alloc_gref(domid: int, count: int, writable: bool) -> bytearray:
    """The argument of IOCTL_GNTALLOC_ALLOC_GREF, with room for ``count`` gref ids."""
    if not 0 <= domid <= _DOMID_MAX:
        raise PlatformError(f"gntalloc: domid {domid} does not fit in 16 bits")
    if count < 1:
        raise PlatformError(f"gntalloc: cannot allocate {count} pages")
    buf = bytearray(max(uapi.GNTALLOC_ALLOC_GREF.size, _GREF_IDS_OFF + 4 * count))
    _ALLOC_IN.pack_into(buf, 0, domid, uapi.GNTALLOC_FLAG_WRITABLE if writable else 0, count)
    return buf


def unpack_alloc_gref(buf: bytes | bytearray, count: int) -> tuple[int, tuple[int, ...]]:
    """(index, gref ids) the kernel wrote into an ALLOC_GREF argument."""
    (index,) = _ALLOC_INDEX.unpack_from(buf, 0)
    grefs = tuple(memoryview(buf)[_GREF_IDS_OFF : _GREF_IDS_OFF + 4 * count].cast("I"))
    return index, grefs


class Gntalloc:
    """/dev/xen/gntalloc: allocate pages granted to a domain, map them, give them back."""

    def __init__(self, dev_dir: str = DEV_DIR, *, fd: int | None = None) -> None:
        self.fd = open_device("gntalloc", dev_dir) if fd is None else fd
        self.path = f"{dev_dir}/gntalloc"

    def fileno(self) -> int:
        return self.fd

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        return ioctl(self.fd, request, arg, what)

    def alloc_gref(self, domid: int, count: int, writable: bool) -> tuple[int, tuple[int, ...]]:
        """Allocate ``count`` zeroed pages granted to ``domid``; (mmap index, their grant refs)."""
        buf = pack_alloc_gref(domid, count, writable)
        try:
            self._ioctl(
                uapi.IOCTL_GNTALLOC_ALLOC_GREF, buf, f"gntalloc: allocating {count} pages for d{domid}"
            )
        except XenDeviceError as e:
            if e.errno == _errno.ENOSPC:
                limit = read_limit()
                raise XenDeviceError(
                    f"gntalloc: out of grantable pages allocating {count} for d{domid}: the domain's "
                    f"gntalloc pages would pass the global limit of {limit if limit is not None else '?'} "
                    f"({GNTALLOC_LIMIT_PARAM}; raise it as root)",
                    errno=e.errno,
                ) from None
            raise
        return unpack_alloc_gref(buf, count)

    def dealloc_gref(self, index: int, count: int) -> None:
        """Give back what ``alloc_gref`` returned at ``index`` (the grants end once the peer unmaps)."""
        buf = bytearray(_DEALLOC.pack(index, count))
        self._ioctl(uapi.IOCTL_GNTALLOC_DEALLOC_GREF, buf, f"gntalloc: freeing {count} pages at {index:#x}")

    def set_unmap_notify(self, offset: int, action: int, port: int) -> None:
        """When the last local mapping of the page at ``offset`` (mmap offset of a byte in it)
        goes: clear that byte and/or notify ``port`` (UNMAP_NOTIFY_*)."""
        buf = bytearray(_NOTIFY.pack(offset, action, port))
        self._ioctl(uapi.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, buf, f"gntalloc: unmap notify at {offset:#x}")

    def mmap(self, index: int, count: int) -> mmap.mmap:
        """Map what one ``alloc_gref`` returned, whole: the kernel's vma close walks the pages
        of an mmap in allocation order, so a mapping must never span two allocations."""
        try:
            return mmap_device(self.fd, count * PAGE_SIZE, index, writable=True)
        except OSError as e:
            raise XenDeviceError(
                f"gntalloc: mmap of {count} pages at {index:#x}: {e.strerror}", errno=e.errno
            ) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


buffer_address = mapping_address

DEFAULT_ARENA_FRAMES = 6144  # 24 MiB: a busy netfront's pools, rings and heads
BACKEND_ARENA_FRAMES = 32768  # 128 MiB of address space for a driver domain (touched pages count)
MIN_ARENA_FRAMES = 1024
_ZERO = bytes(PAGE_SIZE << MAX_ORDER)


class XenMemory:
    """The domain's memory as this process sees it: one arena of pages (see the module doc)."""

    deferred_unmaps = 0  # 1 when the arena outlived ``close`` (a page view was still alive)

    def __init__(
        self,
        gntalloc: Gntalloc | None = None,
        grant_domid: int | None = None,
        *,
        arena_frames: int | None = None,
    ) -> None:
        if (gntalloc is None) != (grant_domid is None):
            raise PlatformError("XenMemory: a gntalloc device and a grant domid go together")
        self.gntalloc = gntalloc
        self.grant_domid = grant_domid
        n = arena_frames or (DEFAULT_ARENA_FRAMES if gntalloc is not None else BACKEND_ARENA_FRAMES)
        n -= n % (1 << MAX_ORDER)
        self._index: int | None = None
        self.grefs: tuple[int, ...] | None = None
        if gntalloc is not None and grant_domid is not None:
            while True:
                try:
                    self._index, self.grefs = gntalloc.alloc_gref(grant_domid, n, writable=True)
                    break
                except XenDeviceError as e:
                    if e.errno != _errno.ENOSPC or n // 2 < MIN_ARENA_FRAMES:
                        raise PlatformError(str(e)) from None
                    n //= 2
            try:
                self._mm = gntalloc.mmap(self._index, n)
            except BaseException:
                gntalloc.dealloc_gref(self._index, n)
                raise
        else:
            try:
                self._mm = mmap.mmap(-1, n * PAGE_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            except OSError as e:
                raise PlatformError(f"memory: cannot map {n} pages ({e.strerror})") from None
        self.arena_frames = n
        self.view = memoryview(self._mm)
        self.base_address = buffer_address(self._mm)
        self._table = bytearray(n)
        self._table[0] = 1  # frame 0 is never handed out
        self._buddy = Buddy(self._table, "xen memory")
        self._by_gref = {ref: f for f, ref in enumerate(self.grefs)} if self.grefs else {}
        self.grant_counts = array("I", bytes(4 * n))
        self.leaked_grants = 0  # logical grants still counted when their page was freed
        self.closed = False

    # -- Memory --------------------------------------------------------------------------

    def alloc(self, order: int = 0) -> Page:
        if self.closed:
            raise PlatformError("memory: closed")
        frame = self._buddy.alloc(order)
        size = PAGE_SIZE << order
        view = self.view[frame * PAGE_SIZE : frame * PAGE_SIZE + size]
        view[:] = _ZERO[:size]
        return Page(frame=frame, order=order, view=view)

    def free(self, page: Page) -> None:
        self._buddy.free(page.frame, page.order)
        for f in range(page.frame, page.frame + (1 << page.order)):
            if self.grant_counts[f]:
                self.leaked_grants += self.grant_counts[f]
                self.grant_counts[f] = 0

    def frame_view(self, frame: int) -> memoryview:
        if self.frame_address(frame) is None:
            raise PlatformError(f"frame {frame} is not allocated memory of this process")
        return self.view[frame * PAGE_SIZE : (frame + 1) * PAGE_SIZE]

    # -- for the grant table and grant copy ----------------------------------------------

    def allocated(self, frame: int) -> bool:
        """Is ``frame`` part of an allocated page?  (Its table byte is a head or a tail.)"""
        return 0 < frame < self.arena_frames and self._table[frame] != 0

    def frame_address(self, frame: int) -> int | None:
        """The virtual address of local ``frame``, None if it is not allocated."""
        return self.base_address + frame * PAGE_SIZE if self.allocated(frame) else None

    def frame_gref(self, frame: int) -> int:
        if not self.allocated(frame):
            raise PlatformError(f"grant_access: frame {frame} is not allocated memory of this process")
        if self.grefs is None:
            raise PlatformError(
                f"grant_access: frame {frame} is not grantable: this platform has no grant peer "
                "(XenPlatform(peer_domid=...) allocates its memory from gntalloc)"
            )
        return self.grefs[frame]

    def gref_frame(self, ref: int) -> int | None:
        return self._by_gref.get(ref)

    @property
    def nr_frames(self) -> int:
        """Frames allocated (frame 0, never handed out, not counted)."""
        return self._buddy.used() - 1

    def close(self) -> None:
        """Unmap the arena and give it back (the kernel would on close anyway)."""
        if self.closed:
            return
        self.closed = True
        self.view.release()
        try:
            self._mm.close()
        except BufferError:
            self.deferred_unmaps = 1
        if self.gntalloc is not None and self._index is not None and self.gntalloc.fd >= 0:
            self.gntalloc.dealloc_gref(self._index, self.arena_frames)


ReadonlyPolicy = Literal["relax", "refuse"]


class XenGrantTable:
    """``GrantTable`` over the gntalloc arena: see the module docstring for what it can't do."""

    def __init__(self, memory: XenMemory, readonly: ReadonlyPolicy = "relax") -> None:
        if readonly not in ("relax", "refuse"):
            raise PlatformError(f"readonly policy {readonly!r}: 'relax' or 'refuse'")
        self.memory = memory
        self.readonly: ReadonlyPolicy = readonly
        self.readonly_relaxed = 0

    def grant_access(self, domid: int, frame: int, readonly: bool) -> int:
        ref = self.memory.frame_gref(frame)
        if domid != self.memory.grant_domid:
            raise PlatformError(
                f"grant_access: frame {frame} was granted to domain {self.memory.grant_domid} when "
                f"gntalloc allocated it; gntalloc cannot grant it to domain {domid}"
            )
        if readonly:
            if self.readonly == "refuse":
                raise PlatformError(
                    f"grant_access: frame {frame}: gntalloc granted the arena writable; it cannot "
                    "make a read-only grant of it"
                )
            self.readonly_relaxed += 1
        self.memory.grant_counts[frame] += 1
        return ref

    def grant_many(self, domid: int, frames: Sequence[int], readonly: bool) -> list[int]:
        return grant_all_or_none(self, domid, frames, readonly)

    def end_access(self, ref: int) -> bool:
        frame = self.memory.gref_frame(ref)
        if frame is None or self.memory.grant_counts[frame] == 0:
            raise PlatformError(f"end_access: grant ref {ref} is not in use")
        self.memory.grant_counts[frame] -= 1
        return True

    def end_many(self, refs: Sequence[int]) -> list[int]:
        for ref in refs:
            self.end_access(ref)
        return []  # gntalloc revokes nothing: no ref is ever "still mapped" here

    def is_mapped(self, ref: int) -> bool:
        raise PlatformError(f"is_mapped: grant ref {ref}: gntalloc cannot tell whether the peer maps a grant")

    @property
    def nr_grants(self) -> int:
        """Logical grants outstanding (including those whose page was freed under them)."""
        return sum(self.memory.grant_counts) + self.memory.leaked_grants


def grefs_of(pages: Sequence[Page], memory: XenMemory) -> list[int]:
    """The grant refs gntalloc made for every frame of ``pages`` (for diagnostics and tests)."""
    return [memory.frame_gref(page.frame + i) for page in pages for i in range(page.nr_frames)]
