"""/dev/xen/gntdev, and the ``GrantMapper`` of the xen platform on it.

What drivers/xen/gntdev.c (Linux 6.1) does, and what follows here:

Map: ``IOCTL_GNTDEV_MAP_GRANT_REF`` reserves ``count`` grants and returns an mmap index
(a byte offset: the reservation's first page << PAGE_SHIFT; freed indexes are reused);
the grants are really mapped by one ``mmap(count * 4096, MAP_SHARED, offset=index)`` of
the whole reservation (a second mmap of it is EINVAL), GNTMAP_readonly unless the mapping
is PROT_WRITE.  A bad grant therefore shows up as mmap failing with EINVAL.  gntdev does
not report Xen's GNTST code for that, so after a failed map each ref is probed with a
1-byte read grant copy to find it (GNTST_general_error when every probe succeeds, which
is what Xen answers for a write map of a read-only grant).  The mappings are made with
``device.mmap_device``, which holds no descriptor per mapping.

Limits: gntdev's ``limit`` parameter (/sys/module/xen_gntdev/parameters/limit) is 65536
grants *per map request* in 6.1, not a global budget (the old global limit and
IOCTL_GNTDEV_SET_MAX_GRANTS are gone: that ioctl is ENOTTY).  What bounds the total is
Xen's maptrack table (``gnttab_max_maptrack_frames``, 1024 frames by default: several
hundred thousand mappings) and the kernel's supply of unpopulated/ballooned pages that
back each mapped grant.

Unmap: munmap, then ``IOCTL_GNTDEV_UNMAP_GRANT_REF``.  Either order works: the
reservation and the VMA each hold a reference, and the grants are unmapped from Xen when
the last goes (the ioctl frees the index at once).  So a mapping whose views are still
exported when ``unmap`` runs stays mapped until the last view goes (``deferred_unmaps``).

Grant copy: ``IOCTL_GNTDEV_GRANT_COPY`` with an array of ``gntdev_grant_copy_segment``;
a side is a grant ref ``{ref, offset, domid}`` or a virtual address in this process (a
local frame's address in ``XenMemory``).  The kernel writes each segment's GNTST status
(0 first, then the first failing op's status).  It fails the *whole* ioctl with EINVAL for
a segment that crosses a page on its grant side or copies local to local, and then the
statuses of the earlier segments mean nothing (their ops may not have run), so such ops
are settled here first with the status Xen gives them (GNTST_bad_copy_arg, and a plain
memmove for local to local), keeping the order of the batch.  Any other ioctl failure
(EFAULT, ENOMEM) raises XenDeviceError for the batch.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from collections.abc import Callable, Sequence

from ...abi.gntdev import GNTDEV_GRANT_COPY_SEGMENT
from ...abi.grant_table import (
    DOMID_SELF,
    GNTST_NAMES,
    GNTCOPY_dest_gref,
    GNTCOPY_source_gref,
    GNTST_bad_copy_arg,
    GNTST_bad_domain,
    GNTST_bad_gntref,
    GNTST_bad_page,
    GNTST_general_error,
    GNTST_okay,
    GNTST_permission_denied,
)
from ..base import PAGE_SIZE, GrantCopy, PlatformError
from . import uapi
from .device import DEV_DIR, XenDeviceError, ioctl, mmap_device, open_device

_MAP_HEAD = uapi.GNTDEV_MAP_GRANT_REF.codec("count", "index")
_MAP_REFS_OFF = uapi.GNTDEV_MAP_GRANT_REF.offsetof("refs")
_GRANT_REF = uapi.GNTDEV_GRANT_REF.codec()
_UNMAP = uapi.GNTDEV_UNMAP_GRANT_REF.codec("index", "count")
_NOTIFY = uapi.GNTDEV_UNMAP_NOTIFY.codec()
_COPY = uapi.GNTDEV_GRANT_COPY.codec()
_SEG = GNTDEV_GRANT_COPY_SEGMENT
SEGMENT_SIZE = _SEG.size
_STATUS_OFF = _SEG.offsetof("status")
_S16 = struct.Struct("<h")
_TAIL = struct.Struct("<HHh")
_LEN_OFF = _SEG.offsetof("len")
_FOREIGN = struct.Struct("<IHH")
_VIRT = struct.Struct("<Q")
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF


def _side_leaves(side: str, is_gref: bool) -> tuple[str, ...]:
    if is_gref:
        return (f"{side}.foreign.ref", f"{side}.foreign.offset", f"{side}.foreign.domid")
    return (f"{side}.virt",)


# one codec per (source is gref, dest is gref): the union arm each side uses
_SEG_CODECS = {
    (s, d): _SEG.codec(*_side_leaves("source", s), *_side_leaves("dest", d), "len", "flags", "status")
    for s in (False, True)
    for d in (False, True)
}

Side = tuple[int, int, int] | int  # (ref, offset, domid) of a grant, or a virtual address


def gntst_name(status: int) -> str:
    return GNTST_NAMES.get(status, f"GNTST {status}")


def pack_map_grant_ref(domid: int, refs: Sequence[int]) -> bytearray:
    """The argument of IOCTL_GNTDEV_MAP_GRANT_REF for ``refs`` of ``domid``."""
    if not refs:
        raise PlatformError("map: no grant refs", status=GNTST_general_error)
    buf = bytearray(max(uapi.GNTDEV_MAP_GRANT_REF.size, _MAP_REFS_OFF + _GRANT_REF.size * len(refs)))
    _MAP_HEAD.pack_into(buf, 0, len(refs), 0)
    for i, ref in enumerate(refs):
        _GRANT_REF.pack_into(buf, _MAP_REFS_OFF + i * _GRANT_REF.size, domid, ref)
    return buf


def unpack_map_index(buf: bytes | bytearray) -> int:
    return int(_MAP_HEAD.unpack_from(buf, 0)[1])


def pack_segment(source: Side, dest: Side, length: int) -> bytes:
    """One ``struct gntdev_grant_copy_segment`` (status 0)."""
    s_gref, d_gref = not isinstance(source, int), not isinstance(dest, int)
    flags = (GNTCOPY_source_gref if s_gref else 0) | (GNTCOPY_dest_gref if d_gref else 0)
    values: list[int] = []
    for side in (source, dest):
        values.extend(side if isinstance(side, tuple) else (side,))
    return _SEG_CODECS[(s_gref, d_gref)].pack(*values, length, flags, 0)


def segment_statuses(data: bytes, count: int) -> list[int]:
    """The GNTST status the kernel wrote into each of ``count`` segments (signed 16 bits)."""
    return [_S16.unpack_from(data, i * SEGMENT_SIZE + _STATUS_OFF)[0] for i in range(count)]


# what plan_copy decided for one op: a segment for the kernel, or a local memmove (src, dst, len)
PlanItem = tuple[int, bytes | tuple[int, int, int]]


def plan_copy(
    ops: Sequence[GrantCopy], self_domid: int, local_address: Callable[[int], int | None]
) -> tuple[list[int], list[PlanItem]]:
    """Check a batch as Xen's gnttab_copy would, before gntdev sees it.

    Returns the status of every op (final for ops refused here, GNTST_okay for the rest
    until they run) and, in op order, what to run: ``(op index, segment bytes)`` for gntdev
    or ``(op index, (src address, dst address, length))`` for a local-to-local copy.
    """
    statuses = [GNTST_okay] * len(ops)
    items: list[PlanItem] = []
    for i, op in enumerate(ops):
        st, sides = _check_op(op, self_domid, local_address)
        if st != GNTST_okay:
            statuses[i] = st
            continue
        source, dest = sides
        if isinstance(source, int) and isinstance(dest, int):
            items.append((i, (source, dest, op.length)))
        else:
            items.append((i, pack_segment(source, dest, op.length)))
    return statuses, items


def _check_op(
    op: GrantCopy, self_domid: int, local_address: Callable[[int], int | None]
) -> tuple[int, tuple[Side, Side]]:
    none: tuple[Side, Side] = (0, 0)
    # the domains first (Xen: gnttab_copy_lock_domains)
    for ptr in (op.source, op.dest):
        if ptr.is_gref:
            if not 0 <= ptr.domid <= _U16_MAX:
                return GNTST_bad_domain, none
        elif ptr.domid not in (DOMID_SELF, self_domid):
            return GNTST_permission_denied, none
    # then each buffer (gnttab_copy_claim_buf): the grant is Xen's to check, a frame ours
    sides: list[Side] = []
    for ptr in (op.source, op.dest):
        if ptr.is_gref:
            if not 0 <= ptr.ref <= _U32_MAX:
                return GNTST_bad_gntref, none
            sides.append((ptr.ref, 0, ptr.domid))  # offset filled in below
        else:
            addr = local_address(ptr.ref)
            if addr is None:
                return GNTST_bad_page, none
            sides.append(addr)
    # then the bounds (gnttab_copy_buf): never across a page on either side
    n = op.length
    if not 0 <= n <= PAGE_SIZE:
        return GNTST_bad_copy_arg, none
    out: list[Side] = []
    for ptr, side in zip((op.source, op.dest), sides, strict=True):
        if ptr.offset < 0 or ptr.offset + n > PAGE_SIZE:
            return GNTST_bad_copy_arg, none
        out.append((ptr.ref, ptr.offset, ptr.domid) if isinstance(side, tuple) else side + ptr.offset)
    return GNTST_okay, (out[0], out[1])


class Gntdev:
    """/dev/xen/gntdev: the raw ioctls and mmap."""

    def __init__(self, dev_dir: str = DEV_DIR, *, fd: int | None = None) -> None:
        self.fd = open_device("gntdev", dev_dir) if fd is None else fd

    def fileno(self) -> int:
        return self.fd

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        return ioctl(self.fd, request, arg, what)

    def map_grant_ref(self, domid: int, refs: Sequence[int]) -> int:
        """Reserve a mapping of ``refs`` of ``domid``; returns the index to mmap at."""
        buf = pack_map_grant_ref(domid, refs)
        self._ioctl(uapi.IOCTL_GNTDEV_MAP_GRANT_REF, buf, f"gntdev: map {len(refs)} grants of d{domid}")
        return unpack_map_index(buf)

    def unmap_grant_ref(self, index: int, count: int) -> None:
        buf = bytearray(_UNMAP.pack(index, count))
        self._ioctl(uapi.IOCTL_GNTDEV_UNMAP_GRANT_REF, buf, f"gntdev: unmap {count} grants at {index:#x}")

    def set_unmap_notify(self, offset: int, action: int, port: int) -> None:
        """When this mapping of the page at ``offset`` goes: clear the byte at ``offset``
        and/or notify ``port`` (UNMAP_NOTIFY_*): the peer learns we died."""
        buf = bytearray(_NOTIFY.pack(offset, action, port))
        self._ioctl(uapi.IOCTL_GNTDEV_SET_UNMAP_NOTIFY, buf, f"gntdev: unmap notify at {offset:#x}")

    def mmap(self, index: int, count: int, writable: bool) -> mmap.mmap:
        """Map ``count`` grants reserved at ``index`` (one mmap per reservation, all of it: gntdev
        refuses a second mmap of one reservation).  The pages are PROT_READ unless ``writable``
        (gntdev then maps with GNTMAP_readonly); the object is writable from Python's side in
        either case, so expose ``memoryview(mm).toreadonly()`` of a read-only one."""
        try:
            return mmap_device(self.fd, count * PAGE_SIZE, index, writable)
        except OSError as e:
            raise XenDeviceError(
                f"gntdev: mmap of {count} grants at {index:#x}: {e.strerror}", errno=e.errno
            ) from None

    def grant_copy(self, segments: bytes) -> list[int]:
        """Run packed segments through IOCTL_GNTDEV_GRANT_COPY; their GNTST statuses."""
        count = len(segments) // SEGMENT_SIZE
        if count == 0:
            return []
        array = ctypes.create_string_buffer(segments, len(segments))
        arg = bytearray(_COPY.pack(count, ctypes.addressof(array)))
        self._ioctl(uapi.IOCTL_GNTDEV_GRANT_COPY, arg, f"gntdev: grant copy of {count} segments")
        return segment_statuses(array.raw, count)

    def grant_copy_into(self, segs: bytearray, count: int) -> None:
        """Run the first ``count`` segments of ``segs`` in place: the kernel writes each status
        into its segment.  XenDeviceError (errno EINVAL) when gntdev refuses the batch."""
        if count == 0:
            return
        array = (ctypes.c_char * len(segs)).from_buffer(segs)
        try:
            arg = bytearray(_COPY.pack(count, ctypes.addressof(array)))
            self._ioctl(uapi.IOCTL_GNTDEV_GRANT_COPY, arg, f"gntdev: grant copy of {count} segments")
        finally:
            del array

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class XenMapping:
    """Foreign grants mapped here by gntdev: ``view`` spans them all (one contiguous mmap),
    ``pages[i]`` is ref i's page."""

    def __init__(
        self, owner: object, domid: int, refs: tuple[int, ...], writable: bool, index: int, mm: mmap.mmap
    ) -> None:
        self.owner = owner
        self._domid = domid
        self._refs = refs
        self._writable = writable
        self.index = index
        self.mm = mm
        self.live = True
        self._base = memoryview(mm)
        # a read-only mapping's pages are PROT_READ: a write must raise, not fault
        self._view = self._base if writable else self._base.toreadonly()
        self.pages = tuple(self._view[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] for i in range(len(refs)))

    @property
    def domid(self) -> int:
        return self._domid

    @property
    def refs(self) -> tuple[int, ...]:
        return self._refs

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def view(self) -> memoryview:
        return self._view

    def release(self) -> bool:
        """Drop our views and munmap; False when someone's slice keeps the mmap alive
        (it is unmapped when the last slice goes)."""
        for v in (*self.pages, self._view, self._base):
            try:
                v.release()
            except BufferError:
                pass
        try:
            self.mm.close()
        except BufferError:
            return False
        return True

    def __repr__(self) -> str:
        return f"XenMapping(d{self._domid}, refs={self._refs}, writable={self._writable}, live={self.live})"


class XenGrantMapper:
    """``GrantMapper`` over gntdev; local frames of grant copies come from ``local_address``."""

    def __init__(self, gntdev: Gntdev, self_domid: int, local_address: Callable[[int], int | None]) -> None:
        self.gntdev = gntdev
        self.self_domid = self_domid
        self._local_address = local_address
        self._live: dict[int, XenMapping] = {}
        self._probe = ctypes.create_string_buffer(PAGE_SIZE)
        self.deferred_unmaps = 0

    def map(self, domid: int, refs: Sequence[int], writable: bool) -> XenMapping:
        refs = tuple(refs)
        if not refs:
            raise PlatformError("map: no grant refs", status=GNTST_general_error)
        if not 0 <= domid <= _U16_MAX:
            raise PlatformError(f"map: bad domid {domid}", status=GNTST_bad_domain)
        for ref in refs:
            if not 0 <= ref <= _U32_MAX:
                raise PlatformError(f"map: bad grant ref {ref}", status=GNTST_bad_gntref)
        try:
            index = self.gntdev.map_grant_ref(domid, refs)
        except XenDeviceError as e:
            raise PlatformError(
                f"map refs {refs} of domain {domid}: {e}", status=GNTST_general_error
            ) from None
        try:
            mm = self.gntdev.mmap(index, len(refs), writable)
        except XenDeviceError as e:
            self.gntdev.unmap_grant_ref(index, len(refs))
            st, ref = self._diagnose(domid, refs)
            raise PlatformError(
                f"map ref {ref} of domain {domid}{' writable' if writable else ''}: {gntst_name(st)} ({e})",
                status=st,
            ) from None
        mapping = XenMapping(self, domid, refs, writable, index, mm)
        self._live[id(mapping)] = mapping
        return mapping

    def _diagnose(self, domid: int, refs: tuple[int, ...]) -> tuple[int, int]:
        """(GNTST status, ref) of the first ref a 1-byte read copy refuses."""
        dest = ctypes.addressof(self._probe)
        for ref in refs:
            try:
                (st,) = self.gntdev.grant_copy(pack_segment((ref, 0, domid), dest, 1))
            except XenDeviceError:
                break
            if st != GNTST_okay:
                return st, ref
        return GNTST_general_error, refs[0]

    def unmap(self, mapping: object) -> None:
        if not isinstance(mapping, XenMapping) or not mapping.live or mapping.owner is not self:
            raise PlatformError("unmap: not a live mapping of this platform")
        mapping.live = False
        del self._live[id(mapping)]
        if not mapping.release():
            self.deferred_unmaps += 1
        self.gntdev.unmap_grant_ref(mapping.index, len(mapping.refs))

    def copy(self, ops: Sequence[GrantCopy]) -> list[int]:
        statuses, items = plan_copy(ops, self.self_domid, self._local_address)
        batch: list[int] = []
        segments: list[bytes] = []

        def flush() -> None:
            if batch:
                for i, st in zip(batch, self.gntdev.grant_copy(b"".join(segments)), strict=True):
                    statuses[i] = st
                batch.clear()
                segments.clear()

        for i, item in items:
            if isinstance(item, bytes):
                batch.append(i)
                segments.append(item)
            else:
                flush()  # keep the batch's order: earlier kernel copies may feed this one
                src, dst, n = item
                ctypes.memmove(dst, src, n)
        flush()
        return statuses

    def copy_segments(self, segs: bytearray, count: int) -> int:
        """Hand the segments to gntdev as they are -- the data plane builds only segments it
        takes.  If gntdev refuses the batch (EINVAL: a grant side across its page, or a copy
        local to local), settle those segments here as Xen would and run the rest."""
        if len(segs) < count * SEGMENT_SIZE:
            raise PlatformError(f"copy_segments: fewer than {count} segments")
        try:
            self.gntdev.grant_copy_into(segs, count)
        except XenDeviceError as e:
            if e.errno != errno.EINVAL:
                raise
            self._copy_segments_carefully(segs, count)
        return sum(1 for st in segment_statuses(bytes(segs[: count * SEGMENT_SIZE]), count) if st)

    def _copy_segments_carefully(self, segs: bytearray, count: int) -> None:
        run: list[int] = []  # segments for the kernel, in order
        for i in range(count):
            off = i * SEGMENT_SIZE
            length, flags, _st = _TAIL.unpack_from(segs, off + _LEN_OFF)
            sides: list[int | None] = []
            st = GNTST_okay
            for pos, bit in ((0, GNTCOPY_source_gref), (8, GNTCOPY_dest_gref)):
                if flags & bit:
                    ref, goff, domid = _FOREIGN.unpack_from(segs, off + pos)
                    if goff + length > PAGE_SIZE:
                        st = GNTST_bad_copy_arg
                    sides.append(None)
                else:
                    sides.append(_VIRT.unpack_from(segs, off + pos)[0])
            if st == GNTST_okay and sides[0] is not None and sides[1] is not None:
                ctypes.memmove(sides[1], sides[0], length)  # local to local: no kernel
            elif st == GNTST_okay:
                run.append(i)
                continue
            _S16.pack_into(segs, off + _STATUS_OFF, st)
        if run:
            packed = bytearray(b"".join(segs[i * SEGMENT_SIZE : (i + 1) * SEGMENT_SIZE] for i in run))
            self.gntdev.grant_copy_into(packed, len(run))
            for k, i in enumerate(run):
                segs[i * SEGMENT_SIZE : (i + 1) * SEGMENT_SIZE] = packed[
                    k * SEGMENT_SIZE : (k + 1) * SEGMENT_SIZE
                ]

    @property
    def nr_mapped(self) -> int:
        return sum(len(m.refs) for m in self._live.values())

    def close(self) -> None:
        for m in list(self._live.values()):
            try:
                self.unmap(m)
            except PlatformError:
                pass
