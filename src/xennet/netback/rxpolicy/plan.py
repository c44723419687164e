"""An rx plan: how one packet is copied into the rx buffers the guest posted, and its checker.

A plan is a list of buffers (one rx request each, 4 KiB); a buffer is a list of copy chunks.
Each chunk is one grant copy: it stays inside one 4 KiB frame of its source (a head or frag
on a possibly compound page) and inside its destination buffer.  Buffers are filled from
offset 0 without gaps, so each rx response says ``offset 0, status = size``.  A GSO packet
takes one more ring slot: the GSO extra info, right after the first buffer's response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ...packet.skb import Piece
from ...platform.base import PAGE_SIZE

RX_BUFFER_SIZE = PAGE_SIZE  # a posted rx buffer is one 4 KiB page (MAX_BUFFER_OFFSET in seed 004)


class PlanError(ValueError):
    """A plan that does not copy its packet correctly (or cannot be made): says what is wrong."""


class Chunk(NamedTuple):
    """One grant copy into the current buffer."""

    src_index: int  # 0 = the head, i = frag i-1
    src_offset: int  # offset inside that piece's (compound) page
    dst_offset: int  # offset inside the rx buffer
    length: int


@dataclass(frozen=True)
class RxPlan:
    buffers: tuple[tuple[Chunk, ...], ...]  # one entry per rx request used for data
    sizes: tuple[int, ...]  # bytes in each buffer: the status of its rx response
    gso: bool  # one extra slot for the GSO extra info after the first response

    @property
    def nbuffers(self) -> int:
        return len(self.buffers)

    @property
    def slots(self) -> int:
        """Rx requests (ring slots) the packet consumes: the buffers plus the GSO extra."""
        return len(self.buffers) + (1 if self.gso else 0)

    @property
    def length(self) -> int:
        return sum(self.sizes)

    @property
    def copies(self) -> int:
        """Grant copy operations the plan needs."""
        return sum(len(b) for b in self.buffers)

    def slot_of(self, buffer: int) -> int:
        """The ring slot (counted from the packet's first request) of buffer ``buffer``'s response:
        the GSO extra info sits in slot 1, so later buffers move up by one."""
        if not 0 <= buffer < len(self.buffers):
            raise IndexError(f"buffer {buffer}: the plan has {len(self.buffers)}")
        return buffer + (1 if self.gso and buffer > 0 else 0)


def finish_plan(buffers: Sequence[Sequence[Chunk]], sizes: Sequence[int], gso: bool) -> RxPlan:
    """Freeze a plan built buffer by buffer; an empty packet has no plan."""
    if not sizes or sizes[0] == 0:
        raise PlanError("an empty packet cannot be received: the first buffer must hold data")
    return RxPlan(tuple(tuple(b) for b in buffers), tuple(sizes), gso)


def packet_length(layout: Sequence[Piece]) -> int:
    return sum(p.length for p in layout)


def check_plan(layout: Sequence[Piece], gso: bool, plan: RxPlan) -> None:
    """Raise PlanError unless ``plan`` copies ``layout`` correctly:

    every byte exactly once and in order (the buffers, concatenated, are the packet); no chunk
    crosses a 4 KiB source frame or leaves its destination buffer; buffers are filled from 0
    without gaps; no buffer is empty (so neither is the first); sizes and slots add up.
    """
    if plan.gso != gso:
        raise PlanError(f"plan says gso={plan.gso}, packet has gso={gso}")
    if not plan.buffers:
        raise PlanError("no buffers")
    if len(plan.sizes) != len(plan.buffers):
        raise PlanError(f"{len(plan.sizes)} sizes for {len(plan.buffers)} buffers")
    if plan.slots != len(plan.buffers) + (1 if gso else 0):
        raise PlanError(f"slots {plan.slots} != buffers {len(plan.buffers)} + gso {int(gso)}")
    # the copy cursor: which piece, and how far into it, the next chunk must start at
    index, done = 0, 0

    def skip_finished() -> None:
        nonlocal index, done
        while index < len(layout) and done == layout[index].length:
            index, done = index + 1, 0

    skip_finished()
    for b, (chunks, size) in enumerate(zip(plan.buffers, plan.sizes, strict=True)):
        if not chunks:
            why = " (the first: netfront needs data there)" if b == 0 else ""
            raise PlanError(f"buffer {b} is empty{why}")
        dst = 0
        for c in chunks:
            where = f"buffer {b} chunk {c}"
            if c.length < 1:
                raise PlanError(f"{where}: empty copy")
            if c.dst_offset != dst:
                raise PlanError(f"{where}: starts at {c.dst_offset}, the buffer is filled up to {dst}")
            if c.dst_offset + c.length > RX_BUFFER_SIZE:
                raise PlanError(f"{where}: overflows the {RX_BUFFER_SIZE}-byte buffer")
            if c.src_offset // PAGE_SIZE != (c.src_offset + c.length - 1) // PAGE_SIZE:
                raise PlanError(f"{where}: crosses a 4 KiB frame of its source page")
            if index >= len(layout):
                raise PlanError(f"{where}: the packet has already been copied completely")
            if c.src_index != index or c.src_offset != layout[index].offset + done:
                raise PlanError(
                    f"{where}: out of order, the next bytes are piece {index} "
                    f"at page offset {layout[index].offset + done}"
                )
            if done + c.length > layout[index].length:
                raise PlanError(f"{where}: runs past the end of piece {index}")
            done += c.length
            dst += c.length
            skip_finished()
        if size != dst:
            raise PlanError(f"buffer {b}: size {size}, its chunks hold {dst} bytes")
    if index < len(layout):
        raise PlanError(f"piece {index} is not copied from byte {done} on")
