"""The ``relayout`` planner: copy as few bytes as possible so that a packet fits the ring.

The packet is the concatenation of its buffers (head, then frags).  A plan is a new
sequence of buffers with the same bytes in the same order, each either

- ``Kept``: a contiguous sub-range of one original buffer, left where it is (same page,
  same offsets).  It costs one slot per 4 KiB frame it spans and copies nothing; or
- ``Copied``: a run of consecutive packet bytes written at offset 0 of a fresh (compound)
  page of the smallest order that holds it.  It costs ``ceil(length / 4096)`` slots and
  ``length`` copied bytes.

A plan is valid when its slots are at most ``max_slots``, its buffers at most ``max_bufs``
(1 + MAX_SKB_FRAGS), and the first buffer has at least ``min(ETH_HLEN, len)`` bytes in its
first frame (netback wants the Ethernet header in the first slot; Linux netfront bounces a
head that starts fewer than ETH_HLEN bytes before a page boundary).  The planner returns a
valid plan that minimises (bytes copied, slots, buffers), in that order.

Why only a few cut points matter.  Call a *cut point* a buffer boundary, a 4 KiB frame
boundary inside a buffer, or the packet offset ``min(ETH_HLEN, len)``.  Take any valid plan
and a kept range [a, b) with ``a`` not a cut point.  Its predecessor cannot be a kept range
of another buffer (``a`` would be a buffer boundary); if it is a kept range of the same
buffer, merging the two keeps every byte, never adds a slot and saves a buffer.  So it is a
copied run C ending at ``a``.  Let ``c`` be the last cut point before ``a``: no frame
boundary lies in (c, a), so growing the kept range down to ``max(c, start of C)`` keeps its
slot count, while C shrinks (fewer bytes, no more slots) or vanishes (one buffer fewer).  If
C is the first buffer it still holds ``min(ETH_HLEN, len)`` bytes, because that offset is a
cut point.  The same argument moves a kept range's end up to the next cut point.  Each move
strictly lowers the bytes copied, so in a plan with the fewest copied bytes every kept range
starts and ends at cut points, and so does every copied run (they lie between kept ranges;
two adjacent copied runs merge at no cost).  The elementary segments between consecutive
cut points are therefore each wholly kept or wholly copied, and a dynamic programme over
the cut points is exact.  ``tests/netfront`` checks this against an exhaustive search over
every partition of the byte stream on small pages.

The programme: two tables hold, per cut point ``at[j]``, the best ways to cover bytes
[0, at[j]) whose last buffer is kept (or nothing yet) / copied, keyed by slots used (and
buffers used when the buffer limit can bind, i.e. ``max_bufs < max_slots``; otherwise every
buffer costs a slot and the slot limit implies the buffer limit), valued (bytes copied,
buffers).  From a state at ``at[j]`` a kept range extends to any cut point of the same
buffer; from a kept-end state a copied run extends to any later cut point (a copied run
never follows a copied run).  States dominated in (slots, bytes, buffers) are pruned.  With
at most ~55 cut points for a 64 KiB packet and at most 19 slot counts this is a few ten
thousand steps.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ...packet.skb import ETH_HLEN, MAX_SKB_FRAGS, Piece, order_for, slots_for
from ...platform.base import MAX_ORDER, PAGE_SIZE


class NoPlan(ValueError):
    """No relayout fits: even one fully copied buffer needs more slots than allowed."""


@dataclass(frozen=True)
class Kept:
    """``length`` bytes of original buffer ``src`` (0 = head) starting ``skip`` bytes into it."""

    pos: int  # offset in the packet
    length: int
    src: int
    skip: int
    slots: int


@dataclass(frozen=True)
class Copied:
    """``length`` packet bytes from packet offset ``pos``, copied to offset 0 of a fresh page."""

    pos: int
    length: int
    order: int
    slots: int


OutBuf = Kept | Copied


@dataclass(frozen=True)
class RelayoutPlan:
    bufs: tuple[OutBuf, ...]
    bytes_copied: int
    slots: int
    page_size: int = PAGE_SIZE

    def layout_of(self, layout: Sequence[Piece]) -> tuple[Piece, ...]:
        """The output's shape, given the input's (kept pieces sit where they were)."""
        out: list[Piece] = []
        for b in self.bufs:
            if isinstance(b, Kept):
                src = layout[b.src]
                out.append(Piece(src.offset + b.skip, b.length, src.order))
            else:
                out.append(Piece(0, b.length, b.order))
        return tuple(out)

    @property
    def slot_counts(self) -> list[int]:
        return [b.slots for b in self.bufs]


def first_frame_bytes(offset: int, length: int, page_size: int = PAGE_SIZE) -> int:
    """Bytes of a buffer that lie in its first frame (what its first slot carries)."""
    return min(length, page_size - offset % page_size)


class _State(NamedTuple):
    """The best way found to cover the packet up to a cut point, for one (slots[, buffers]) key."""

    copied: int  # bytes copied so far
    bufs: int
    slots: int
    came_from: int  # which table the previous state is in (_KEPT_END or _COPIED_END)
    prev_cut: int  # index of the previous state's cut point
    prev_key: int
    step: int  # how this state was reached: _START, _KEPT or _COPIED


# _State(...) runs a Python-level __new__; the DP builds thousands: tuple.__new__ is half the cost
_new_state = functools.partial(tuple.__new__, _State)
_KEPT_END, _COPIED_END = 0, 1  # the two tables: last buffer kept (or nothing yet) / copied
_KEPT, _COPIED, _START = 0, 1, 2
_Table = list[dict[int, _State]]  # per cut point: key -> state


@dataclass(frozen=True)
class _Cuts:
    """The cut points of a layout (see the module) and, per elementary segment
    [at[k], at[k+1]), the buffer that holds it and the cut index where that buffer ends."""

    at: list[int]
    owner: list[int]
    buf_end: list[int]
    starts: list[int]  # packet offset of each original buffer

    @classmethod
    def of(cls, layout: Sequence[Piece], page: int, hmin: int) -> _Cuts:
        total = sum(p.length for p in layout)
        starts: list[int] = []
        points = {total, hmin}
        pos = 0
        for p in layout:
            starts.append(pos)
            points.add(pos)
            r = (-p.offset) % page or page  # the first frame boundary inside the buffer
            while r < p.length:
                points.add(pos + r)
                r += page
            pos += p.length
        at = sorted(points)
        index = {x: k for k, x in enumerate(at)}
        owner: list[int] = []
        buf_end: list[int] = []
        i = 0
        for k in range(len(at) - 1):
            while at[k] >= starts[i] + layout[i].length:
                i += 1
            owner.append(i)
            buf_end.append(index[starts[i] + layout[i].length])
        return cls(at, owner, buf_end, starts)


def relayout_plan(
    layout: Sequence[Piece],
    max_slots: int,
    max_bufs: int = 1 + MAX_SKB_FRAGS,
    *,
    page_size: int = PAGE_SIZE,
    head_min: int = ETH_HLEN,
) -> RelayoutPlan:
    """The valid plan with the fewest copied bytes (then slots, then buffers); see the module."""
    page = page_size
    if not layout:
        raise ValueError("a packet needs a head")
    for p in layout:
        if p.length < 1 or p.offset < 0 or p.offset + p.length > page << p.order:
            raise ValueError(f"bad piece {p} for page size {page}")
    total = sum(p.length for p in layout)
    hmin = min(head_min, total)
    cuts = _Cuts.of(layout, page, hmin)
    m = len(cuts.at)
    # keyed by slots, and by buffers too when the buffer limit can bind (with max_bufs >=
    # max_slots every buffer costs a slot, and the slot limit implies the buffer limit):
    # key = slots * per_slot + bufs * per_buf
    per_slot, per_buf = (max_bufs + 1, 1) if max_bufs < max_slots else (1, 0)
    tables: tuple[_Table, _Table] = ([{} for _ in range(m)], [{} for _ in range(m)])
    tables[_KEPT_END][0][0] = _State(0, 0, 0, -1, -1, -1, _START)
    for j in range(m - 1):
        _prune(tables[_KEPT_END][j], tables[_COPIED_END][j], max_bufs)
        kept = _kept_extensions(layout, cuts, j, page, hmin)
        copies = _copied_extensions(cuts, j, page, hmin, max_slots)
        for t in (_KEPT_END, _COPIED_END):
            for k0, (cp, bufs, sl, _, _, _, _) in tables[t][j].items():  # unpacked: the hot loop
                bufs += 1
                if bufs > max_bufs:
                    continue
                # the inner loops run per candidate: states are compared by index (copied is
                # [0], bufs [1]) and built only when they win
                for k, s in kept:
                    slots = sl + s
                    if slots > max_slots:
                        continue
                    dst, dk = tables[_KEPT_END][k], slots * per_slot + bufs * per_buf
                    cur = dst.get(dk)
                    if cur is None or cp < cur[0] or (cp == cur[0] and bufs < cur[1]):
                        dst[dk] = _new_state((cp, bufs, slots, t, j, k0, _KEPT))
                if t == _KEPT_END:  # a copied run never follows a copied run: they would merge
                    for k, n, s in copies:
                        slots = sl + s
                        if slots > max_slots:
                            break
                        dst, dk, n = tables[_COPIED_END][k], slots * per_slot + bufs * per_buf, n + cp
                        cur = dst.get(dk)
                        if cur is None or n < cur[0] or (n == cur[0] and bufs < cur[1]):
                            dst[dk] = _new_state((n, bufs, slots, t, j, k0, _COPIED))
    last = [(e, t, k0) for t in (_KEPT_END, _COPIED_END) for k0, e in tables[t][m - 1].items()]
    if not last:
        raise NoPlan(
            f"no layout of {total} bytes fits {max_slots} slots and {max_bufs} buffers "
            f"with {hmin} header bytes in the first slot"
        )
    best, t, k0 = min(last, key=lambda c: (c[0].copied, c[0].slots, c[0].bufs))
    plan = _backtrack(layout, cuts, tables, t, k0, page)
    return RelayoutPlan(tuple(plan), best.copied, best.slots, page)


def _kept_extensions(
    layout: Sequence[Piece], cuts: _Cuts, j: int, page: int, hmin: int
) -> list[tuple[int, int]]:
    """(cut index, slots) of each kept range [at[j], at[k]) of the buffer holding at[j]."""
    x, bi = cuts.at[j], cuts.owner[j]
    boff = layout[bi].offset + x - cuts.starts[bi]
    out: list[tuple[int, int]] = []
    for k in range(j + 1, cuts.buf_end[j] + 1):
        n = cuts.at[k] - x
        if j == 0 and first_frame_bytes(boff, n, page) < hmin:
            continue  # the head's first slot must carry the Ethernet header
        out.append((k, slots_for(boff, n, page)))
    return out


def _copied_extensions(
    cuts: _Cuts, j: int, page: int, hmin: int, max_slots: int
) -> list[tuple[int, int, int]]:
    """(cut index, bytes, slots) of each copied run [at[j], at[k]), in increasing length."""
    x = cuts.at[j]
    out: list[tuple[int, int, int]] = []
    for k in range(j + 1, len(cuts.at)):
        n = cuts.at[k] - x
        if n > page << MAX_ORDER:
            break  # no compound page holds it
        if j == 0 and min(n, page) < hmin:
            continue
        s = -(-n // page)
        if s > max_slots:
            break
        out.append((k, n, s))
    return out


def _backtrack(
    layout: Sequence[Piece], cuts: _Cuts, tables: tuple[_Table, _Table], t: int, k0: int, page: int
) -> list[OutBuf]:
    """The buffers of the plan ending in state ``tables[t][last][k0]``, first to last."""
    out: list[OutBuf] = []
    k = len(cuts.at) - 1
    while True:
        e = tables[t][k][k0]
        if e.step == _START:
            break
        a, b = cuts.at[e.prev_cut], cuts.at[k]
        if e.step == _KEPT:
            src = cuts.owner[e.prev_cut]
            skip = a - cuts.starts[src]
            out.append(Kept(a, b - a, src, skip, slots_for(layout[src].offset + skip, b - a, page)))
        else:
            out.append(Copied(a, b - a, order_for(b - a, page), -(-(b - a) // page)))
        t, k, k0 = e.came_from, e.prev_cut, e.prev_key
    out.reverse()
    return out


def _prune(kept: dict[int, _State], copied: dict[int, _State], max_bufs: int) -> None:
    """Drop states another state beats in every respect: no more slots, bytes copied or
    buffers.  A kept-end state (which may copy next) also beats such a copied-end state
    (which may not).

    States are visited by slots; ``best_kept[b]`` / ``best_copied[b]`` is the fewest bytes
    copied by a surviving earlier state with at most ``b`` buffers."""
    inf = 1 << 62
    best_kept = [inf] * (max_bufs + 1)
    best_copied = [inf] * (max_bufs + 1)
    order = [(sl, cp, nb, _KEPT_END, k) for k, (cp, nb, sl, _, _, _, _) in kept.items()]
    order += [(sl, cp, nb, _COPIED_END, k) for k, (cp, nb, sl, _, _, _, _) in copied.items()]
    order.sort()
    for _slots, cp, nbuf, t, k in order:
        if best_kept[nbuf] <= cp or (t == _COPIED_END and best_copied[nbuf] <= cp):
            del (copied if t == _COPIED_END else kept)[k]
            continue
        best = best_copied if t == _COPIED_END else best_kept
        for b in range(nbuf, max_bufs + 1):
            if best[b] <= cp:
                break
            best[b] = cp
