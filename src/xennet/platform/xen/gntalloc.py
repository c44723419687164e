"""/dev/xen/gntalloc, and the ``Memory`` and ``GrantTable`` of the xen platform built on it.

The memory/grant model
======================

Linux lets a userspace process grant only pages that gntalloc allocated for it, and
gntalloc grants each page *when it allocates it*, to one domain, writable or read-only
for the page's whole life.  The seam's ``grant_access(domid, frame, readonly)`` grants an
existing frame later.  The least-bad honest mapping:

* ``XenMemory`` is this process's pool of pages.  With a grant peer (``grant_domid``), every
  ``alloc(order)`` is one ``IOCTL_GNTALLOC_ALLOC_GREF`` of ``1 << order`` pages granted
  *writable* to that domain, mmapped at the returned index: a compound page is contiguous
  in our address space, and each of its frames has its own grant ref.  Without a peer
  (a backend never grants), pages are anonymous mmaps.  Either way a page has a stable
  virtual address, which is what gntdev's grant copy needs for the local side.
* Frame numbers are this process's own (``Page.frame`` and ``frame + i`` for the frames of
  a compound page, never reused); they are not Xen gfns and mean nothing to another domain.
* ``grant_access(domid, frame, readonly)`` returns the ref gntalloc made for that frame and
  counts a logical grant; ``end_access`` drops the count.  Granting one frame twice returns
  the same ref twice (both must be ended).

What gntalloc cannot express, and what this does about it:

* **Granting to a domain other than the pool's**: refused with PlatformError.
* **Read-only grants**: the pool's pages are granted writable, so ``readonly=True`` is
  relaxed to a writable grant (counted in ``readonly_relaxed``) unless the table was made
  with ``readonly="refuse"``, which raises PlatformError instead.
* **Ending a grant**: nothing is revoked in Xen by ``end_access``; the peer keeps access to
  every pool page until the page is freed (``IOCTL_GNTALLOC_DEALLOC_GREF``; the kernel
  keeps the page out of reuse until the peer unmaps it).  The security boundary is the
  pool, not the grant: a page recycled without ``free`` stays visible to the peer.
  ``end_access`` therefore always succeeds (True) for a ref in use.
* **Whether the peer maps a grant** (``is_mapped``): userspace cannot see the grant table
  entry's reading/writing bits, so it raises PlatformError.
* **Size**: gntalloc has a global page limit shared by every process of the domain (module
  parameter ``limit``, /sys/module/xen_gntalloc/parameters/limit, default 1024 pages; one
  ALLOC_GREF of more than the limit, or one that would take the total past it, fails with
  ENOSPC, and ``alloc`` raises PlatformError).  Every page of the pool counts, granted or
  not, while this process holds it (Linux 6.1 stops counting a freed page at once, even
  while the peer still maps it: the grant and the page then wait in the kernel's deferred
  list, not in gntalloc).  A netfront with full rings holds 2 ring pages + 256 rx buffers +
  up to 256 tx slots = 514 pages before its page cache (up to 512 more) and the packets in
  flight, so 1024 is not enough for one busy vif, let alone two: ``XenPlatform`` raises the
  limit (``ensure_gntalloc_limit``) to ``WANTED_GNTALLOC_LIMIT`` when it is lower.

Every allocation is one ioctl and one mmap of its own (``Gntalloc.mmap`` never spans two:
the kernel's vma close walks an mmap's pages in allocation order), mapped without holding a
descriptor per mapping (``device.mmap_device``).
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..base import MAX_ORDER, PAGE_SIZE, Page, PlatformError
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


@dataclass(eq=False)
class _Block:
    """One allocation: ``1 << order`` frames, one mmap."""

    frame: int
    order: int
    mm: mmap.mmap
    view: memoryview
    address: int
    index: int | None = None  # gntalloc mmap index; None for anonymous memory
    grefs: tuple[int, ...] | None = None
    grant_domid: int | None = None
    grant_counts: list[int] = field(default_factory=list)

    @property
    def nr_frames(self) -> int:
        return 1 << self.order


class XenMemory:
    """The domain's memory as this process sees it: a pool of pages it allocated (see module doc)."""

    def __init__(self, gntalloc: Gntalloc | None = None, grant_domid: int | None = None) -> None:
        if (gntalloc is None) != (grant_domid is None):
            raise PlatformError("XenMemory: a gntalloc device and a grant domid go together")
        self.gntalloc = gntalloc
        self.grant_domid = grant_domid
        self._blocks: dict[int, _Block] = {}  # first frame -> block
        self._frames: dict[int, _Block] = {}  # every frame -> its block
        self._by_gref: dict[int, tuple[_Block, int]] = {}
        self._next_frame = 1  # frame 0 stays unused, so a zeroed field never names a page
        self._lock = threading.Lock()
        self.leaked_grants = 0  # logical grants still counted when their page was freed
        self.deferred_unmaps = 0  # frees whose mmap stayed (views still exported), unmapped at GC

    # -- Memory --------------------------------------------------------------------------

    def alloc(self, order: int = 0) -> Page:
        if not 0 <= order <= MAX_ORDER:
            raise PlatformError(f"alloc: order {order} outside 0..{MAX_ORDER}")
        n = 1 << order
        index: int | None = None
        grefs: tuple[int, ...] | None = None
        if self.gntalloc is not None and self.grant_domid is not None:
            index, grefs = self.gntalloc.alloc_gref(self.grant_domid, n, writable=True)
            try:
                mm = self.gntalloc.mmap(index, n)
            except BaseException:
                self.gntalloc.dealloc_gref(index, n)
                raise
        else:
            try:
                mm = mmap.mmap(-1, n * PAGE_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            except OSError as e:
                raise PlatformError(
                    f"alloc: out of memory for an order-{order} page ({e.strerror})"
                ) from None
        view = memoryview(mm)
        with self._lock:
            frame = self._next_frame
            self._next_frame += n
            block = _Block(frame, order, mm, view, buffer_address(mm), index, grefs, self.grant_domid)
            block.grant_counts = [0] * n
            self._blocks[frame] = block
            for i in range(n):
                self._frames[frame + i] = block
            for i, ref in enumerate(grefs or ()):
                self._by_gref[ref] = (block, i)
        return Page(frame=frame, order=order, view=view)

    def free(self, page: Page) -> None:
        with self._lock:
            block = self._blocks.get(page.frame)
            if block is None or block.order != page.order:
                raise PlatformError(f"free: frame {page.frame} is not an allocated order-{page.order} page")
            del self._blocks[block.frame]
            for i in range(block.nr_frames):
                del self._frames[block.frame + i]
            for ref in block.grefs or ():
                self._by_gref.pop(ref, None)
            self.leaked_grants += sum(block.grant_counts)
        self._release(block)

    def _release(self, block: _Block) -> None:
        try:
            block.view.release()  # Page.view: use after free fails, as on the sim
            block.mm.close()
        except BufferError:
            # someone still holds a slice: the mapping goes when the last one does
            self.deferred_unmaps += 1
        if self.gntalloc is not None and block.index is not None and self.gntalloc.fd >= 0:
            self.gntalloc.dealloc_gref(block.index, block.nr_frames)

    def frame_view(self, frame: int) -> memoryview:
        block = self._frames.get(frame)
        if block is None:
            raise PlatformError(f"frame {frame} is not allocated memory of this process")
        i = frame - block.frame
        return block.view[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]

    # -- for the grant table and grant copy ----------------------------------------------

    def frame_address(self, frame: int) -> int | None:
        """The virtual address of local ``frame``, None if it is not allocated."""
        block = self._frames.get(frame)
        if block is None:
            return None
        return block.address + (frame - block.frame) * PAGE_SIZE

    def frame_grant(self, frame: int) -> tuple[_Block, int]:
        block = self._frames.get(frame)
        if block is None:
            raise PlatformError(f"grant_access: frame {frame} is not allocated memory of this process")
        return block, frame - block.frame

    def gref_entry(self, ref: int) -> tuple[_Block, int] | None:
        return self._by_gref.get(ref)

    @property
    def nr_frames(self) -> int:
        return len(self._frames)

    def blocks(self) -> Iterator[_Block]:
        return iter(list(self._blocks.values()))

    def close(self) -> None:
        """Unmap and give back every page still allocated (the kernel would on close anyway)."""
        with self._lock:
            blocks = list(self._blocks.values())
            self._blocks.clear()
            self._frames.clear()
            self._by_gref.clear()
        for block in blocks:
            self._release(block)


ReadonlyPolicy = Literal["relax", "refuse"]


class XenGrantTable:
    """``GrantTable`` over the gntalloc pool: see the module docstring for what it can't do."""

    def __init__(self, memory: XenMemory, readonly: ReadonlyPolicy = "relax") -> None:
        if readonly not in ("relax", "refuse"):
            raise PlatformError(f"readonly policy {readonly!r}: 'relax' or 'refuse'")
        self.memory = memory
        self.readonly: ReadonlyPolicy = readonly
        self.readonly_relaxed = 0

    def grant_access(self, domid: int, frame: int, readonly: bool) -> int:
        block, i = self.memory.frame_grant(frame)
        if block.grefs is None:
            raise PlatformError(
                f"grant_access: frame {frame} is not grantable: this platform has no grant peer "
                "(XenPlatform(peer_domid=...) allocates its memory from gntalloc)"
            )
        if domid != block.grant_domid:
            raise PlatformError(
                f"grant_access: frame {frame} was granted to domain {block.grant_domid} when gntalloc "
                f"allocated it; gntalloc cannot grant it to domain {domid}"
            )
        if readonly:
            if self.readonly == "refuse":
                raise PlatformError(
                    f"grant_access: frame {frame}: gntalloc granted the pool writable; it cannot make "
                    "a read-only grant of it"
                )
            self.readonly_relaxed += 1
        block.grant_counts[i] += 1
        return block.grefs[i]

    def end_access(self, ref: int) -> bool:
        entry = self.memory.gref_entry(ref)
        if entry is None or entry[0].grant_counts[entry[1]] == 0:
            raise PlatformError(f"end_access: grant ref {ref} is not in use")
        block, i = entry
        block.grant_counts[i] -= 1
        return True

    def is_mapped(self, ref: int) -> bool:
        raise PlatformError(f"is_mapped: grant ref {ref}: gntalloc cannot tell whether the peer maps a grant")

    @property
    def nr_grants(self) -> int:
        """Logical grants outstanding (including those whose page was freed under them)."""
        return sum(sum(b.grant_counts) for b in self.memory.blocks()) + self.memory.leaked_grants


def grefs_of(pages: Sequence[Page], memory: XenMemory) -> list[int]:
    """The grant refs gntalloc made for every frame of ``pages`` (for diagnostics and tests)."""
    out: list[int] = []
    for page in pages:
        for i in range(page.nr_frames):
            block, j = memory.frame_grant(page.frame + i)
            if block.grefs is None:
                raise PlatformError(f"frame {page.frame + i} has no grant ref")
            out.append(block.grefs[j])
    return out
