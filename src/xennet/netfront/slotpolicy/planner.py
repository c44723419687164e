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

The programme: ``A[j]`` / ``C[j]`` hold the best ways to cover bytes [0, X[j]) whose last
buffer is kept (or nothing yet) / copied, keyed by slots used (and buffers used when the
buffer limit can bind, i.e. ``max_bufs < max_slots``; otherwise every buffer costs a slot and
the slot limit implies the buffer limit), valued (bytes copied, buffers).  From a state at
X[j] a kept range extends to any cut point of the same buffer; from an ``A`` state a copied
run extends to any later cut point (a copied run never follows a copied run).  States
dominated in (slots, bytes, buffers) are pruned.  With at most ~55 cut points for a 64 KiB
packet and at most 19 slot counts this is a few ten thousand steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


# A DP entry: (bytes copied, buffers, slots, back-pointer table, back j, back key, kind)
_Entry = tuple[int, int, int, int, int, int, int]
_KEPT, _COPIED, _START = 0, 1, 2


def relayout_plan(
    layout: Sequence[Piece],
    max_slots: int,
    max_bufs: int = 1 + MAX_SKB_FRAGS,
    *,
    page_size: int = PAGE_SIZE,
    head_min: int = ETH_HLEN,
) -> RelayoutPlan:
    """The valid plan with the fewest copied bytes (then slots, then buffers); see the module."""
    P = page_size
    if not layout:
        raise ValueError("a packet needs a head")
    for p in layout:
        if p.length < 1 or p.offset < 0 or p.offset + p.length > P << p.order:
            raise ValueError(f"bad piece {p} for page size {P}")
    total = sum(p.length for p in layout)
    hmin = min(head_min, total)
    max_copy = P << MAX_ORDER

    # Cut points: buffer boundaries, frame boundaries inside buffers, and the header length.
    starts: list[int] = []
    cuts = {total}
    pos = 0
    for p in layout:
        starts.append(pos)
        cuts.add(pos)
        r = (-p.offset) % P or P
        while r < p.length:
            cuts.add(pos + r)
            r += P
        pos += p.length
    cuts.add(hmin)
    X = sorted(cuts)
    m = len(X)
    owner: list[int] = []  # buffer holding segment [X[k], X[k+1])
    buf_end: list[int] = []  # cut index where that buffer ends
    ends = {starts[i] + p.length: i for i, p in enumerate(layout)}
    end_index = {i: X.index(e) for e, i in ends.items()}
    i = 0
    for k in range(m - 1):
        while X[k] >= starts[i] + layout[i].length:
            i += 1
        owner.append(i)
        buf_end.append(end_index[i])

    track_bufs = max_bufs < max_slots
    nb = max_bufs + 1

    A: list[dict[int, _Entry]] = [{} for _ in range(m)]
    C: list[dict[int, _Entry]] = [{} for _ in range(m)]
    A[0][0] = (0, 0, 0, -1, -1, -1, _START)
    tables = (A, C)

    for j in range(m - 1):
        _prune(A[j], C[j], max_bufs)
        x = X[j]
        bi = owner[j]
        boff = layout[bi].offset + x - starts[bi]
        # kept ranges [x, X[k]) of buffer bi
        kept: list[tuple[int, int]] = []
        for k in range(j + 1, buf_end[j] + 1):
            n = X[k] - x
            if j == 0 and first_frame_bytes(boff, n, P) < hmin:
                continue
            kept.append((k, slots_for(boff, n, P)))
        # copied runs [x, X[k])
        copies: list[tuple[int, int, int]] = []
        for k in range(j + 1, m):
            n = X[k] - x
            if n > max_copy:
                break
            if j == 0 and min(n, P) < hmin:
                continue
            s = -(-n // P)
            if s > max_slots:
                break
            copies.append((k, n, s))
        for t in (0, 1):
            for key, e in tables[t][j].items():
                cp, nbuf, sl = e[0], e[1] + 1, e[2]
                if nbuf > max_bufs:
                    continue
                for k, s in kept:
                    s += sl
                    if s > max_slots:
                        continue
                    nkey = s * nb + nbuf if track_bufs else s
                    dst = A[k]
                    cur = dst.get(nkey)
                    if cur is None or cp < cur[0] or (cp == cur[0] and nbuf < cur[1]):
                        dst[nkey] = (cp, nbuf, s, t, j, key, _KEPT)
                if t == 0:
                    for k, n, s in copies:
                        s += sl
                        if s > max_slots:
                            break
                        nkey = s * nb + nbuf if track_bufs else s
                        dst = C[k]
                        cur = dst.get(nkey)
                        n += cp
                        if cur is None or n < cur[0] or (n == cur[0] and nbuf < cur[1]):
                            dst[nkey] = (n, nbuf, s, t, j, key, _COPIED)

    best: tuple[tuple[int, int, int], int, int] | None = None
    for t in (0, 1):
        for key, e in tables[t][m - 1].items():
            cand = ((e[0], e[2], e[1]), t, key)
            if best is None or cand[0] < best[0]:
                best = cand
    if best is None:
        raise NoPlan(
            f"no layout of {total} bytes fits {max_slots} slots and {max_bufs} buffers "
            f"with {hmin} header bytes in the first slot"
        )
    (copied, slots, _nbufs), t, key = best
    out: list[OutBuf] = []
    k = m - 1
    while True:
        e = tables[t][k][key]
        kind, pt, pj, pkey = e[6], e[3], e[4], e[5]
        if kind == _START:
            break
        a, b = X[pj], X[k]
        if kind == _KEPT:
            src = owner[pj]
            skip = a - starts[src]
            out.append(Kept(a, b - a, src, skip, slots_for(layout[src].offset + skip, b - a, P)))
        else:
            out.append(Copied(a, b - a, order_for(b - a, P), -(-(b - a) // P)))
        t, k, key = pt, pj, pkey
    out.reverse()
    return RelayoutPlan(tuple(out), copied, slots, P)


def _prune(a: dict[int, _Entry], c: dict[int, _Entry], max_bufs: int) -> None:
    """Drop states another state beats in every respect: no more slots, bytes copied or
    buffers.  An ``A`` state (which may copy next) also beats such a ``C`` state (which may not).

    Entries are visited by slots; ``best_a[b]`` / ``best_c[b]`` is the fewest bytes copied by
    a surviving earlier state with at most ``b`` buffers."""
    inf = 1 << 62
    best_a = [inf] * (max_bufs + 1)
    best_c = [inf] * (max_bufs + 1)
    entries = [(e[2], e[0], e[1], 0, key) for key, e in a.items()]
    entries += [(e[2], e[0], e[1], 1, key) for key, e in c.items()]
    entries.sort()
    for _sl, cp, nbuf, t, key in entries:
        if best_a[nbuf] <= cp or (t and best_c[nbuf] <= cp):
            del (c if t else a)[key]
            continue
        best = best_c if t else best_a
        for b in range(nbuf, max_bufs + 1):
            if best[b] <= cp:
                break
            best[b] = cp
