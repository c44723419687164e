"""The platform seam.  Everything above this layer sees only these types.

Names follow the Linux devices: ``GrantTable`` is what gntalloc (or the kernel's
gnttab_grant_foreign_access) offers a granting domain, ``GrantMapper`` is gntdev
(map, unmap, batch grant copy), ``EventChannels`` is /dev/xen/evtchn.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..abi.gntdev import SEGMENT_SIZE
from ..abi.grant_table import (
    DOMID_SELF,
    GNTCOPY_dest_gref,
    GNTCOPY_source_gref,
    GNTST_bad_copy_arg,
    GNTST_bad_domain,
    GNTST_bad_gntref,
    GNTST_okay,
    GNTST_permission_denied,
)

PAGE_SIZE = 4096
PAGE_SHIFT = 12
MAX_ORDER = 4  # compound pages of up to 16 frames


class PlatformError(Exception):
    """A hypervisor service refused an operation; the message says which and why.

    ``status`` is the GNTST_* code when a grant operation failed (None otherwise).
    """

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[PlatformError], tuple[str, int | None]]:
        # keep ``status`` when the error crosses a process boundary (multiprocessing pickles it)
        return (type(self), (str(self), self.status))


class PeerGone(PlatformError):
    """The remote domain of an event channel (or a grant) no longer exists."""


NO_FRAME = -1  # Page.frame of memory that is no frame of the domain's: a mapped peer page, heap


@dataclass(frozen=True)
class Page:
    """A page or compound page of the local domain's memory: ``1 << order`` contiguous frames."""

    frame: int  # first frame number (gfn) in the domain's memory
    order: int
    view: memoryview  # len == PAGE_SIZE << order

    @classmethod
    def outside(cls, view: memoryview, order: int = 0) -> Page:
        """Memory that is no frame of the domain's (a peer's page we map, process heap): it
        cannot be granted or grant-copied by frame, and is never freed to the domain's memory."""
        return cls(NO_FRAME, order, view)

    @property
    def in_domain_memory(self) -> bool:
        return self.frame != NO_FRAME

    @property
    def nr_frames(self) -> int:
        return 1 << self.order

    @property
    def size(self) -> int:
        return PAGE_SIZE << self.order


@dataclass(frozen=True)
class CopyPtr:
    """One side of a grant copy: a grant ref of ``domid``, or a local frame when ``is_gref`` is False."""

    ref: int  # grant ref, or gmfn for a local frame
    domid: int
    offset: int
    is_gref: bool = True


@dataclass(frozen=True)
class GrantCopy:
    source: CopyPtr
    dest: CopyPtr
    length: int


class Mapping(Protocol):
    """Foreign pages mapped into this domain (gntdev).  ``view`` is live shared memory.

    Read-only members, so an implementation may compute them (the sim's ``view`` of a
    multi-ref map exists only when the granted frames are contiguous).
    """

    @property
    def domid(self) -> int: ...

    @property
    def refs(self) -> tuple[int, ...]: ...

    @property
    def writable(self) -> bool: ...

    @property
    def view(self) -> memoryview: ...


@dataclass(frozen=True)
class Accounting:
    """What a domain holds right now; a clean disconnect brings all of it back to the baseline."""

    pages: int  # frames allocated from the domain's memory
    grants: int  # grant entries with access permitted
    maps: int  # foreign grants this domain has mapped
    ports: int  # event channel ports not closed


class Memory(Protocol):
    """The domain's memory.  ``view`` holds every frame (frame ``f`` at ``f * PAGE_SIZE``) and
    starts at virtual address ``base_address``: the data-plane kernels address frames there."""

    @property
    def view(self) -> memoryview: ...

    @property
    def base_address(self) -> int: ...

    def alloc(self, order: int = 0) -> Page:
        """Allocate ``1 << order`` contiguous zeroed frames; raises PlatformError when out of memory."""
        ...

    def free(self, page: Page) -> None: ...

    def frame_view(self, frame: int) -> memoryview:
        """The 4 KiB of local frame ``frame``."""
        ...


class GrantTable(Protocol):
    """The granting side: entries of our own grant table."""

    def grant_access(self, domid: int, frame: int, readonly: bool) -> int:
        """Permit ``domid`` to access local ``frame``; returns the grant ref."""
        ...

    def end_access(self, ref: int) -> bool:
        """Revoke ``ref``.  False (and nothing changes) while the peer still has it mapped."""
        ...

    def grant_many(self, domid: int, frames: Sequence[int], readonly: bool) -> list[int]:
        """``grant_access`` for each frame, in one go; all or nothing."""
        ...

    def end_many(self, refs: Sequence[int]) -> list[int]:
        """``end_access`` for each ref, in one go; returns the refs not ended (still mapped)."""
        ...

    def is_mapped(self, ref: int) -> bool: ...


def grant_all_or_none(table: GrantTable, domid: int, frames: Sequence[int], readonly: bool) -> list[int]:
    """``grant_many`` out of ``grant_access``: a failure part-way ends the grants made so far."""
    refs: list[int] = []
    try:
        for frame in frames:
            refs.append(table.grant_access(domid, frame, readonly))
    except PlatformError:
        table.end_many(refs)
        raise
    return refs


class GrantMapper(Protocol):
    """gntdev: use grants other domains gave us."""

    def map(self, domid: int, refs: Sequence[int], writable: bool) -> Mapping:
        """Map ``refs`` of ``domid`` as one contiguous view; raises PlatformError with the GNTST code."""
        ...

    def unmap(self, mapping: Mapping) -> None: ...

    def copy(self, ops: Sequence[GrantCopy]) -> list[int]:
        """Run a batch of grant copies; one GNTST_* status per op, in order."""
        ...

    def copy_segments(self, segs: bytearray, count: int) -> int:
        """Run ``count`` packed ``gntdev_grant_copy_segment``s (``abi.gntdev``); each gets its
        GNTST status in place.  Returns how many failed."""
        ...


class EventChannels(Protocol):
    """/dev/xen/evtchn: a pending port is reported once and stays masked until ``unmask``."""

    def alloc_unbound(self, remote_domid: int) -> int: ...

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int: ...

    def notify(self, port: int) -> None:
        """Raise the event at the remote end; PeerGone if the remote domain is dead or closed it."""
        ...

    def pending(self) -> list[int]:
        """Ports that fired since last asked (non-blocking); each is masked until unmask()."""
        ...

    def unmask(self, port: int) -> None: ...

    def close(self, port: int) -> None: ...

    def fileno(self) -> int:
        """Readable when a port may be pending: for select/asyncio."""
        ...


class Platform(Protocol):
    """One domain's view of the hypervisor."""

    domid: int
    memory: Memory
    grants: GrantTable
    mapper: GrantMapper
    evtchn: EventChannels

    def xenstore_path(self) -> str:
        """Where this domain's xenstore connection goes (a socket path on sim)."""
        ...

    def accounting(self) -> Accounting: ...

    def close(self) -> None:
        """Release everything this domain object holds in this process."""
        ...


_SIDE_GREF = struct.Struct("<IHH")
_SIDE_VIRT = struct.Struct("<Q")
_TAIL = struct.Struct("<HHh")
_U16_MAX = 0xFFFF


def ops_to_segments(
    ops: Sequence[GrantCopy], self_domid: int, frame_address: Callable[[int], int | None]
) -> tuple[bytearray, list[int], list[int]]:
    """Pack per-op grant copies as segments: (segments, the op index of each, a status per op).

    What a segment cannot express is settled here, with the status Xen gives it: a local side
    naming another domain (permission denied, Xen's first check), a ref, domid, offset or
    length too wide for its field.  A local frame we do not have becomes address 0, which
    the executor refuses as a bad page at the step Xen would.  The rest start as GNTST_okay.
    """
    statuses = [GNTST_okay] * len(ops)
    segs = bytearray()
    index: list[int] = []
    for i, op in enumerate(ops):
        ptrs = (op.source, op.dest)
        if any(not p.is_gref and p.domid not in (DOMID_SELF, self_domid) for p in ptrs):
            statuses[i] = GNTST_permission_denied
            continue
        if any(p.is_gref and not 0 <= p.domid <= _U16_MAX for p in ptrs):
            statuses[i] = GNTST_bad_domain
            continue
        if any(p.is_gref and not 0 <= p.ref <= 0xFFFFFFFF for p in ptrs):
            statuses[i] = GNTST_bad_gntref
            continue
        if not 0 <= op.length <= _U16_MAX or any(not 0 <= p.offset <= _U16_MAX for p in ptrs):
            statuses[i] = GNTST_bad_copy_arg
            continue
        seg = bytearray(SEGMENT_SIZE)
        flags = 0
        for pos, ptr, bit in zip((0, 8), ptrs, (GNTCOPY_source_gref, GNTCOPY_dest_gref), strict=True):
            if ptr.is_gref:
                _SIDE_GREF.pack_into(seg, pos, ptr.ref, ptr.offset, ptr.domid)
                flags |= bit
            else:
                addr = frame_address(ptr.ref)
                _SIDE_VIRT.pack_into(seg, pos, 0 if addr is None else addr + ptr.offset)
        _TAIL.pack_into(seg, 16, op.length, flags, 0)
        segs += seg
        index.append(i)
    return segs, index, statuses


def segment_statuses(segs: bytes | bytearray, count: int) -> list[int]:
    """The status each of ``count`` segments got."""
    return [_TAIL.unpack_from(segs, i * SEGMENT_SIZE + 16)[2] for i in range(count)]


def copy_by_segments(
    mapper: GrantMapper, ops: Sequence[GrantCopy], self_domid: int, frame_address: Callable[[int], int | None]
) -> list[int]:
    """``GrantMapper.copy`` for a mapper that runs segments: pack, run, read the statuses back."""
    segs, index, statuses = ops_to_segments(ops, self_domid, frame_address)
    if index:
        mapper.copy_segments(segs, len(index))
        for i, st in zip(index, segment_statuses(segs, len(index)), strict=True):
            statuses[i] = st
    return statuses
