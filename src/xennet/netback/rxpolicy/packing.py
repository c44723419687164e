"""Packing policies: how a packet's head and frags are laid into the guest's rx buffers.

Both policies cut every head/frag into the pieces one grant copy can do: a copy may not cross
a 4 KiB frame of the source, so a head or frag on a compound page (or a head that crosses a
4 KiB boundary) is walked frame by frame (as ``page_pieces`` splits).  Each policy has ``plan`` (build
the copy plan) and ``estimate`` (the ring slots it will need, from a counting pass that builds
nothing: what the backend reserves before the packet is queued).

``seed``  Seed 004's rule (Ian Campbell's netback patch), applied to those per-frame chunks:
          pack small pieces into the current buffer; start a new buffer when the current one is
          full, or when the chunk would overflow it but fits whole in the next one (a chunk is
          never larger than 4096 bytes, so it always would), the current buffer holds data and
          the chunk is not the very first bytes of the packet (the head: never leave the first
          buffer empty).  So a chunk is never split between two buffers, and a buffer is only
          opened to take data.  The unit is the chunk rather than the whole frag because that is
          the unit the copy has to work in; the seed's own slot estimate counted whole frags
          and so disagrees with its copy on compound pages (see ``seed_original``).
``full``  Fill every buffer to the last byte, splitting a chunk wherever a buffer ends (what
          Linux xenvif_rx does today): ``ceil(len / 4096)`` buffers, the fewest possible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ...packet.skb import Piece
from ...platform.base import PAGE_SIZE
from .plan import RX_BUFFER_SIZE, Chunk, PlanError, RxPlan, check_plan, finish_plan, packet_length


class PackingPolicy(Protocol):
    name: str
    core_id: int  # the data-plane kernels' name for it (core/pure/netback_rx.py)

    def plan(self, layout: Sequence[Piece], gso: bool) -> RxPlan:
        """The copy plan for a packet of this layout (head first)."""
        ...

    def estimate(self, layout: Sequence[Piece], gso: bool) -> int:
        """Ring slots ``plan(layout, gso)`` will use, counted without building it."""
        ...


class SeedPacking:
    """Seed 004's packing, applied per 4 KiB source chunk (see the module docstring)."""

    name = "seed"
    core_id = 1  # PACK_SEED

    def plan(self, layout: Sequence[Piece], gso: bool) -> RxPlan:
        buffers: list[list[Chunk]] = [[]]
        sizes = [0]
        cur = buffers[0]
        copy_off = 0
        for index, piece in enumerate(layout):
            pos, end = piece.offset, piece.offset + piece.length
            while pos < end:
                size = min(end - pos, PAGE_SIZE - pos % PAGE_SIZE)  # one chunk: up to the frame end
                head = copy_off == 0 and len(buffers) == 1  # the packet's first bytes: first buffer
                if copy_off == RX_BUFFER_SIZE or (
                    copy_off + size > RX_BUFFER_SIZE  # would overflow this buffer,
                    and size <= RX_BUFFER_SIZE  # (i) fits whole in the next one,
                    and copy_off > 0  # (ii) this one already holds data,
                    and not head  # (iii) and it is not the head
                ):
                    sizes[-1] = copy_off
                    cur = []
                    buffers.append(cur)
                    sizes.append(0)
                    copy_off = 0
                n = min(size, RX_BUFFER_SIZE - copy_off)  # == size: a chunk never overflows here
                cur.append(Chunk(index, pos, copy_off, n))
                copy_off += n
                pos += n
        sizes[-1] = copy_off
        return finish_plan(buffers, sizes, gso)

    def estimate(self, layout: Sequence[Piece], gso: bool) -> int:
        # Counting pass.  A chunk of n (1..4096) bytes goes into the current buffer if it fits,
        # else opens the next one; only the very first chunk lands in an empty buffer.  A piece
        # is: a first chunk up to its next 4 KiB boundary, whole 4096-byte frames, a tail.
        count, copy_off = 1, 0
        for piece in layout:
            if piece.length <= 0:
                continue
            first = min(piece.length, PAGE_SIZE - piece.offset % PAGE_SIZE)
            whole, tail = divmod(piece.length - first, PAGE_SIZE)
            if copy_off and copy_off + first > RX_BUFFER_SIZE:
                count, copy_off = count + 1, first
            else:
                copy_off += first
            if whole:  # copy_off > 0 here: each whole frame opens a buffer and fills it
                count, copy_off = count + whole, RX_BUFFER_SIZE
            if tail:
                if copy_off + tail > RX_BUFFER_SIZE:
                    count, copy_off = count + 1, tail
                else:
                    copy_off += tail
        if copy_off == 0:
            raise PlanError("an empty packet cannot be received: the first buffer must hold data")
        return count + (1 if gso else 0)


class FullPacking:
    """Fill every buffer completely; split copies at buffer ends and 4 KiB source frames."""

    name = "full"
    core_id = 0  # PACK_FULL

    def plan(self, layout: Sequence[Piece], gso: bool) -> RxPlan:
        buffers: list[list[Chunk]] = [[]]
        sizes = [0]
        cur = buffers[0]
        copy_off = 0
        for index, piece in enumerate(layout):
            pos, end = piece.offset, piece.offset + piece.length
            while pos < end:
                if copy_off == RX_BUFFER_SIZE:
                    sizes[-1] = copy_off
                    cur = []
                    buffers.append(cur)
                    sizes.append(0)
                    copy_off = 0
                # up to the end of the source frame, of the buffer, or of the piece
                n = min(end - pos, PAGE_SIZE - pos % PAGE_SIZE, RX_BUFFER_SIZE - copy_off)
                cur.append(Chunk(index, pos, copy_off, n))
                copy_off += n
                pos += n
        sizes[-1] = copy_off
        return finish_plan(buffers, sizes, gso)

    def estimate(self, layout: Sequence[Piece], gso: bool) -> int:
        total = packet_length(layout)
        if total <= 0:
            raise PlanError("an empty packet cannot be received: the first buffer must hold data")
        return -(-total // RX_BUFFER_SIZE) + (1 if gso else 0)


def check_packing(policy: PackingPolicy, layout: Sequence[Piece], gso: bool) -> RxPlan:
    """The checker for one packet: ``policy``'s plan is valid (``check_plan``) and its estimate,
    counted separately, is exactly the slots the plan uses.  Returns the plan; PlanError if not."""
    plan = policy.plan(layout, gso)
    check_plan(layout, gso, plan)
    est = policy.estimate(layout, gso)
    if est != plan.slots:
        raise PlanError(f"{policy.name}: estimate {est} slots, the plan uses {plan.slots}")
    return plan


PACKING_POLICIES: dict[str, Callable[[], PackingPolicy]] = {
    SeedPacking.name: SeedPacking,
    FullPacking.name: FullPacking,
}


def packing_policy(name: str) -> PackingPolicy:
    try:
        return PACKING_POLICIES[name]()
    except KeyError:
        known = ", ".join(sorted(PACKING_POLICIES))
        raise ValueError(f"unknown rx packing policy {name!r}: choose one of {known}") from None
