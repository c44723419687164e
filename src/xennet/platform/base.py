"""The platform seam.  Everything above this layer sees only these types.

Names follow the Linux devices: ``GrantTable`` is what gntalloc (or the kernel's
gnttab_grant_foreign_access) offers a granting domain, ``GrantMapper`` is gntdev
(map, unmap, batch grant copy), ``EventChannels`` is /dev/xen/evtchn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True)
class Page:
    """A page or compound page of the local domain's memory: ``1 << order`` contiguous frames."""

    frame: int  # first frame number (gfn) in the domain's memory
    order: int
    view: memoryview  # len == PAGE_SIZE << order

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

    def is_mapped(self, ref: int) -> bool: ...


class GrantMapper(Protocol):
    """gntdev: use grants other domains gave us."""

    def map(self, domid: int, refs: Sequence[int], writable: bool) -> Mapping:
        """Map ``refs`` of ``domid`` as one contiguous view; raises PlatformError with the GNTST code."""
        ...

    def unmap(self, mapping: Mapping) -> None: ...

    def copy(self, ops: Sequence[GrantCopy]) -> list[int]:
        """Run a batch of grant copies; one GNTST_* status per op, in order."""
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
