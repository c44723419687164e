"""The buffers the kernels work on, as Python objects: packet vectors, frame pools, and the
per-queue state of netfront (what each request id holds).

Each is a few ``bytearray``s in the layout of ``records``; both cores read and write the
same bytes.  The methods here are the slow, per-item interface for code that handles one
packet or one frame at a time; the hot loops hand the buffers to ``kernels`` whole.
"""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from ..abi.grant_table import DOMID_SELF
from . import kernels
from . import records as r
from .pure.codecs import PIECE, PKT, POOL_HEADER, RX_SLOT, TX_INFLIGHT, TX_SLOT
from .types import WBuffer


def buffer_address(buf: WBuffer) -> int:
    """The address of a writable buffer's first byte (for the virtual side of a grant copy)."""
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c  # drop the export at once: an mmap with exports cannot be closed


class Piece(NamedTuple):
    frame: int  # a local frame, or the grant ref when ``domid`` is another domain
    offset: int
    len: int
    ref: int = r.NONE32
    domid: int = DOMID_SELF
    flags: int = 0


class Packet(NamedTuple):
    piece0: int
    npieces: int
    flags: int
    len: int
    tag: int
    gso_size: int
    gso_type: int
    error: int
    csum_start: int
    csum_offset: int


class PacketVec:
    """Packets as ranges of pieces, with room for ``max_pkts`` and ``max_pieces``."""

    def __init__(self, max_pkts: int, max_pieces: int) -> None:
        self.max_pkts = max_pkts
        self.max_pieces = max_pieces
        self.pkts = bytearray(max_pkts * r.PKT.size)
        self.pieces = bytearray(max_pieces * r.PIECE.size)
        self.npkts = 0
        self.npieces = 0
        self.tags = bytearray(4 * max_pkts)  # vec_release writes the tags of released packets here
        # what a queue delivered in this vector: packets with pieces and no error, and their bytes
        self.delivered = 0
        self.delivered_bytes = 0

    def clear(self) -> None:
        self.npkts = self.npieces = 0
        self.delivered = self.delivered_bytes = 0

    def packet(self, i: int) -> Packet:
        return Packet._make(PKT.unpack_from(self.pkts, i * r.PKT.size))

    def set_packet(self, i: int, p: Packet) -> None:
        PKT.pack_into(self.pkts, i * r.PKT.size, *p)

    def piece(self, k: int) -> Piece:
        return Piece._make(PIECE.unpack_from(self.pieces, k * r.PIECE.size))

    def set_piece(self, k: int, p: Piece) -> None:
        PIECE.pack_into(self.pieces, k * r.PIECE.size, *p)

    def pieces_of(self, i: int) -> list[Piece]:
        p = self.packet(i)
        return [self.piece(k) for k in range(p.piece0, p.piece0 + p.npieces)]

    def iter_pieces(self, i: int) -> Iterator[Piece]:
        """The pieces of packet ``i``, decoded one at a time: a reader of the headers stops
        after the first one or two of a 17-piece GSO packet."""
        p = self.packet(i)
        for k in range(p.piece0, p.piece0 + p.npieces):
            yield self.piece(k)

    def room(self, npieces: int) -> bool:
        return self.npkts < self.max_pkts and self.npieces + npieces <= self.max_pieces

    def append(
        self,
        pieces: Sequence[Piece],
        *,
        flags: int = 0,
        tag: int = r.NONE32,
        gso_size: int = 0,
        gso_type: int = 0,
        csum_start: int = 0,
        csum_offset: int = 0,
    ) -> int:
        """Add one packet; returns its index."""
        if not self.room(len(pieces)):
            raise ValueError("packet vector full")
        piece0 = self.npieces
        length = 0
        for k, pc in enumerate(pieces):
            self.set_piece(piece0 + k, pc)
            if not pc.flags & r.PIECE_RUN:
                length += pc.len
        self.npieces += len(pieces)
        i = self.npkts
        self.set_packet(
            i, Packet(piece0, len(pieces), flags, length, tag, gso_size, gso_type, 0, csum_start, csum_offset)
        )
        self.npkts += 1
        return i

    def compact(self, start: int) -> None:
        """Drop packets ``0..start`` (done) and their pieces; the rest move to the front."""
        if start == 0:
            return
        if start >= self.npkts:
            self.clear()
            return
        self.npieces = kernels.vec_compact(self.pkts, self.pieces, start, self.npkts, self.npieces)
        self.npkts -= start


class FramePool:
    """Free frames of one domain's memory, taken and given back in batches by the kernels.

    ``granted``: every frame the pool holds is granted to one peer (its ref is kept), so
    handing a frame out costs no grant (netfront's pre-granted pools, as MirageOS does).
    """

    def __init__(self, nr_frames: int, *, granted: bool = False, cap: int | None = None) -> None:
        cap = nr_frames if cap is None else cap
        self.nr_frames = nr_frames
        self.granted = granted
        self.buf = bytearray(r.pool_bytes(cap, nr_frames))
        POOL_HEADER.pack_into(self.buf, 0, 0, cap, nr_frames, 1 if granted else 0)
        self.owned = 0  # frames that are the pool's (free or taken)
        _stack, _state, refs = r.pool_offsets(cap, nr_frames)
        self._refs = memoryview(self.buf)[refs : refs + 4 * nr_frames].cast("I")
        _stack, state, _refs = r.pool_offsets(cap, nr_frames)
        self._state = memoryview(self.buf)[state : state + nr_frames]

    @property
    def count(self) -> int:
        """Free frames."""
        return int(POOL_HEADER.unpack_from(self.buf, 0)[0])

    @property
    def taken(self) -> int:
        return self.owned - self.count

    def ref(self, frame: int) -> int:
        return int(self._refs[frame])

    def holds(self, frame: int) -> bool:
        return 0 <= frame < self.nr_frames and self._state[frame] != r.POOL_NOT_OURS

    def add(self, frames: Sequence[int], refs: Sequence[int] | None = None) -> None:
        f = array("I", frames)
        rf = array("I", refs) if refs is not None else None
        kernels.pool_add(self.buf, f, rf, len(f))
        self.owned += len(f)

    def take(self, n: int) -> list[int]:
        out = array("I", bytes(4 * n))
        got = kernels.pool_take(self.buf, n, out)
        return list(out[:got])

    def give(self, frames: Iterable[int]) -> None:
        f = array("I", frames)
        kernels.pool_give(self.buf, f, len(f))

    def drain(self) -> list[int]:
        """Every free frame leaves the pool; returns them."""
        out = array("I", bytes(4 * max(self.count, 1)))
        n = kernels.pool_drain(self.buf, out)
        self.owned -= n
        return list(out[:n])


class Stack:
    """A u16 stack (element 0 is the count): free request ids, free in-flight slots."""

    def __init__(self, cap: int, fill: Iterable[int] = ()) -> None:
        self.buf = bytearray(2 * (cap + 1))
        self.v = memoryview(self.buf).cast("H")
        for x in fill:
            n = self.v[0]
            self.v[n + 1] = x
            self.v[0] = n + 1

    @property
    def count(self) -> int:
        return int(self.v[0])


class TxState:
    """netfront tx: per request id its grant, frame, packet; per in-flight packet its slots."""

    def __init__(self, nr_ents: int) -> None:
        self.nr_ents = nr_ents
        self.slots = bytearray(nr_ents * r.TX_SLOT.size)
        for i in range(nr_ents):
            TX_SLOT.pack_into(self.slots, i * r.TX_SLOT.size, r.NONE32, r.NONE32, r.NONE16, 0)
        self.inflight = bytearray(nr_ents * r.TX_INFLIGHT.size)
        # popped from the top: ids 0, 1, 2, ... first, as a fresh Linux netfront hands them out
        self.ids = Stack(nr_ents, range(nr_ents - 1, -1, -1))
        self.pkts = Stack(nr_ents, range(nr_ents - 1, -1, -1))

    @property
    def in_flight_ids(self) -> int:
        return self.nr_ents - self.ids.count

    @property
    def in_flight_packets(self) -> int:
        return self.nr_ents - self.pkts.count

    def slot(self, rid: int) -> tuple[int, int, int, int]:
        """(ref, frame, in-flight packet or NONE16, PIECE_* flags) of request id ``rid``."""
        return TX_SLOT.unpack_from(self.slots, rid * r.TX_SLOT.size)  # type: ignore[return-value]

    def inflight_tag(self, slot: int) -> int:
        return int(TX_INFLIGHT.unpack_from(self.inflight, slot * r.TX_INFLIGHT.size)[0])


class RxState:
    """netfront rx: per request id the buffer posted with it."""

    def __init__(self, nr_ents: int) -> None:
        self.nr_ents = nr_ents
        self.slots = bytearray(nr_ents * r.RX_SLOT.size)
        for i in range(nr_ents):
            RX_SLOT.pack_into(self.slots, i * r.RX_SLOT.size, r.NONE32, 0)

    def slot(self, rid: int) -> tuple[int, int]:
        """(frame or NONE32, ref) posted with id ``rid``."""
        return RX_SLOT.unpack_from(self.slots, rid * r.RX_SLOT.size)  # type: ignore[return-value]

    def set_slot(self, rid: int, frame: int, ref: int) -> None:
        RX_SLOT.pack_into(self.slots, rid * r.RX_SLOT.size, frame, ref)

    @property
    def posted(self) -> int:
        return sum(1 for i in range(self.nr_ents) if self.slot(i)[0] != r.NONE32)
