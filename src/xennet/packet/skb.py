"""An skb: a linear head plus up to 17 frags, each a (page, offset, length) in domain memory.

A page may be compound (order 0-4), so a head or frag may cross 4 KiB boundaries; the
ring protocol then needs one slot per 4 KiB piece.  ``Layout`` is the pure shape of an
skb (offsets and lengths only) that the slot counting, tx policies and rx packing work on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..abi.netif import (
    CSUM_PARTIAL,
    CSUM_VALIDATED,
    XEN_NETIF_GSO_TYPE_NONE,
    XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6,
)
from ..platform.base import MAX_ORDER, PAGE_SIZE, Page, PlatformError
from .cb import ControlBlock

MAX_SKB_FRAGS = 17
MAX_PACKET = 0xFFFF  # XEN_NETIF_MAX_TX_SIZE
ETH_HLEN = 14

GSO_NONE = XEN_NETIF_GSO_TYPE_NONE
GSO_TCPV4 = XEN_NETIF_GSO_TYPE_TCPV4
GSO_TCPV6 = XEN_NETIF_GSO_TYPE_TCPV6


class LayoutError(ValueError):
    """A head/frag layout that cannot exist: said in words a CLI user understands."""


class Csum(enum.Enum):
    NONE = "none"  # no checksum promise: the receiver verifies
    PARTIAL = "partial"  # checksum to be completed: csum_start/csum_offset say where
    UNNECESSARY = "unnecessary"  # already verified


_CSUM_STATE = {Csum.NONE: 0, Csum.PARTIAL: CSUM_PARTIAL, Csum.UNNECESSARY: CSUM_VALIDATED}


def csum_state(csum: Csum) -> int:
    """An skb's checksum state as the packet records and rings carry it (abi/netif CSUM_*)."""
    return _CSUM_STATE[csum]


def csum_of(state: int) -> Csum:
    """The skb checksum state of a packet record's flags (PARTIAL wins over VALIDATED)."""
    if state & CSUM_PARTIAL:
        return Csum.PARTIAL
    if state & CSUM_VALIDATED:
        return Csum.UNNECESSARY
    return Csum.NONE


class Foreign(NamedTuple):
    """Bytes that are a mapping of another domain's grant (seed 003): forward by grant copy."""

    domid: int
    gref: int
    offset: int  # where these bytes start inside that granted page


class Piece(NamedTuple):
    """One buffer of a layout: ``offset`` inside a (compound) page of ``1 << order`` frames."""

    offset: int
    length: int
    order: int = MAX_ORDER

    def slots(self) -> int:
        return slots_for(self.offset, self.length)


Layout = tuple[Piece, ...]  # head first, then frags


def slots_for(offset: int, length: int, page_size: int = PAGE_SIZE) -> int:
    """Frames spanned by ``length`` bytes at ``offset`` (one grant, one slot each)."""
    if length <= 0:
        return 0
    return (offset + length - 1) // page_size - offset // page_size + 1


def order_for(length: int, page_size: int = PAGE_SIZE) -> int:
    """The smallest page order holding ``length`` bytes (the caller bounds it by MAX_ORDER)."""
    order = 0
    while page_size << order < length:
        order += 1
    return order


def page_pieces(offset: int, length: int) -> Iterator[tuple[int, int, int]]:
    """Split a buffer at 4 KiB boundaries: (frame index in the compound page, offset in frame, length)."""
    pos, end = offset, offset + length
    while pos < end:
        frame, off = divmod(pos, PAGE_SIZE)
        n = min(end - pos, PAGE_SIZE - off)
        yield frame, off, n
        pos += n


def layout_slots(layout: Sequence[Piece]) -> int:
    return sum(p.slots() for p in layout)


def validate_layout(layout: Sequence[Piece]) -> None:
    if not layout:
        raise LayoutError("a packet needs a head")
    if len(layout) - 1 > MAX_SKB_FRAGS:
        raise LayoutError(f"{len(layout) - 1} frags: an skb holds at most {MAX_SKB_FRAGS}")
    total = 0
    for i, p in enumerate(layout):
        what = "head" if i == 0 else f"frag {i - 1}"
        if not 0 <= p.order <= MAX_ORDER:
            raise LayoutError(f"{what}: page order {p.order}, want 0..{MAX_ORDER}")
        if p.length < 1:
            raise LayoutError(f"{what}: length {p.length}, want at least 1 byte")
        if p.offset < 0 or p.offset + p.length > PAGE_SIZE << p.order:
            raise LayoutError(
                f"{what}: {p.length} bytes at offset {p.offset} do not fit a page of order {p.order} "
                f"({PAGE_SIZE << p.order} bytes)"
            )
        total += p.length
    if total > MAX_PACKET:
        raise LayoutError(f"packet of {total} bytes: the protocol carries at most {MAX_PACKET}")


class PageSource(Protocol):
    """Where skb pages come from: a platform's ``Memory``, or ``HeapPages`` for pure use."""

    def alloc(self, order: int = 0) -> Page: ...

    def free(self, page: Page) -> None: ...


class HeapPages:
    """Pages in process memory (not grantable): for tests, analysis and frame building."""

    def __init__(self) -> None:
        self.live = 0

    def alloc(self, order: int = 0) -> Page:
        if not 0 <= order <= MAX_ORDER:
            raise PlatformError(f"order {order} out of range")
        self.live += 1
        return Page.outside(memoryview(bytearray(PAGE_SIZE << order)), order)

    def free(self, page: Page) -> None:
        self.live -= 1


@dataclass(frozen=True)
class Buf:
    """A head or frag: ``length`` bytes at ``offset`` of ``page``."""

    page: Page
    offset: int
    length: int
    foreign: Foreign | None = None
    # A buffer whose bytes came from several grants (a header pulled across slots): the
    # (grant, byte count) runs in order.  Empty means ``foreign`` covers the whole buffer.
    runs: tuple[tuple[Foreign, int], ...] = ()

    def foreign_pieces(self, start: int, length: int) -> Iterator[tuple[Foreign, int]]:
        """The grant sources of ``length`` bytes from ``start`` (an offset inside this buffer):
        (Foreign pointing at the first byte, byte count) pieces.  Only for foreign buffers."""
        runs = self.runs or (((self.foreign, self.length),) if self.foreign is not None else ())
        pos = 0
        for f, n in runs:
            if f is None:
                break
            lo, hi = max(start, pos), min(start + length, pos + n)
            if lo < hi:
                yield Foreign(f.domid, f.gref, f.offset + (lo - pos)), hi - lo
            pos += n

    @property
    def view(self) -> memoryview:
        return self.page.view[self.offset : self.offset + self.length]

    @property
    def piece(self) -> Piece:
        return Piece(self.offset, self.length, self.page.order)

    def slots(self) -> int:
        return slots_for(self.offset, self.length)


@dataclass
class Skb:
    head: Buf
    frags: list[Buf] = field(default_factory=list)
    gso_size: int = 0
    gso_type: int = GSO_NONE
    csum: Csum = Csum.NONE
    csum_start: int = 0  # from the start of the packet
    csum_offset: int = 0  # from csum_start: where the checksum field is
    pages: list[Page] = field(default_factory=list)  # pages this skb owns (freed with it)
    # skb->cb (packet/cb.py), made when a layer first asks for it (control_block()): most
    # packets never need one, and the hot path builds no objects a packet
    cb: ControlBlock | None = None
    # Called once when the last user is done (like skb->destructor): netback answers the
    # guest's tx slots and unmaps its grants only then.  ``users`` counts clones (bridge floods).
    destructor: Callable[[], None] | None = None
    users: int = 1
    source: PageSource | None = None  # where ``pages`` go back to when the last user releases

    def control_block(self) -> ControlBlock:
        if self.cb is None:
            self.cb = ControlBlock()
        return self.cb

    def cb_copy(self) -> ControlBlock | None:
        """What a clone or a segment inherits (``__copy_skb_header``): a copy, or nothing."""
        return None if self.cb is None else self.cb.copy()

    @property
    def bufs(self) -> list[Buf]:
        return [self.head, *self.frags]

    @property
    def len(self) -> int:
        return self.head.length + sum(f.length for f in self.frags)

    @property
    def layout(self) -> Layout:
        return tuple(b.piece for b in self.bufs)

    def slots(self) -> int:
        return sum(b.slots() for b in self.bufs)

    def data(self) -> bytes:
        return b"".join(bytes(b.view) for b in self.bufs)

    def views(self, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
        """The packet bytes ``[start, end)`` as views into the bufs (no copy), in order."""
        stop = self.len if end is None else end
        if not 0 <= start <= stop <= self.len:
            raise ValueError(f"bytes {start}..{stop} of a {self.len}-byte packet")
        pos = 0
        for b in self.bufs:
            lo, hi = max(start, pos), min(stop, pos + b.length)
            if lo < hi:
                yield b.view[lo - pos : hi - pos]
            pos += b.length

    def read(self, start: int, n: int) -> bytes:
        return b"".join(self.views(start, start + n))

    def write(self, start: int, data: bytes) -> None:
        """Overwrite packet bytes at ``start`` (possibly across bufs and pages)."""
        pos = 0
        for v in self.views(start, start + len(data)):
            v[:] = data[pos : pos + len(v)]
            pos += len(v)

    def get(self) -> Skb:
        """Another user (skb_get): the destructor waits for every ``release``."""
        self.users += 1
        return self

    def release(self, source: PageSource | None = None) -> None:
        """Drop one user; the last one frees owned pages (to ``source``, else the skb's own
        ``source``) and runs the destructor."""
        self.users -= 1
        if self.users > 0:
            return
        source = source or self.source
        if source is not None:
            self.free(source)
        if self.destructor is not None:
            fn, self.destructor = self.destructor, None
            fn()

    def free(self, source: PageSource) -> None:
        for page in self.pages:
            source.free(page)
        self.pages.clear()


def build_skb(data: bytes, layout: Sequence[Piece], source: PageSource) -> Skb:
    """Place ``data`` into fresh pages with exactly ``layout`` (head first).  Each buffer gets
    its own page of its order, so offsets are honoured and nothing overlaps."""
    validate_layout(layout)
    if sum(p.length for p in layout) != len(data):
        raise LayoutError(f"layout holds {sum(p.length for p in layout)} bytes, data has {len(data)}")
    pages: list[Page] = []
    bufs: list[Buf] = []
    pos = 0
    try:
        for p in layout:
            page = source.alloc(p.order)
            pages.append(page)
            page.view[p.offset : p.offset + p.length] = data[pos : pos + p.length]
            bufs.append(Buf(page, p.offset, p.length))
            pos += p.length
    except BaseException:
        for page in pages:
            source.free(page)
        raise
    return Skb(bufs[0], bufs[1:], pages=pages, source=source)


def linear_layout(length: int) -> Layout:
    """The layout a linearized copy of ``length`` bytes gets: a head page, then 4 KiB frags."""
    pieces = [Piece(0, min(length, PAGE_SIZE), 0)]
    rest = length - pieces[0].length
    while rest > 0:
        n = min(rest, PAGE_SIZE)
        pieces.append(Piece(0, n, 0))
        rest -= n
    return tuple(pieces)
