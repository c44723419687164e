"""Hypothesis strategies for packet layouts: compound pages (order 0-4), misaligned offsets,
heads and frags crossing 4 KiB boundaries, tiny, awkward (4095..4098, 8193) and large pieces,
up to 17 frags and 64 KiB in all.

Drawing is the slow part of these tests, so a layout is drawn as one list of raw integer
tuples (few, fixed strategies) and shaped by a plain function; it still shrinks well (fewer
pieces, smaller numbers)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from xennet.packet.skb import MAX_PACKET, MAX_SKB_FRAGS, Layout, Piece, validate_layout
from xennet.platform.base import MAX_ORDER, PAGE_SIZE

AWKWARD_LENGTHS = (1, 2, 3, 14, 54, 66, 4094, 4095, 4096, 4097, 4098, 8191, 8192, 8193, 12289)
BIGGEST = PAGE_SIZE << MAX_ORDER

Raw = tuple[int, int, int, int, int, int]


def shape(raws: Sequence[Raw], max_order: int) -> Layout:
    budget = MAX_PACKET
    out: list[Piece] = []
    for order, length_kind, length_val, offset_kind, offset_val, slack in raws:
        if budget <= 0:
            break
        order = min(order, max_order)
        size = PAGE_SIZE << order
        cap = min(size, budget)
        if length_kind == 0:  # tiny
            length = length_val % 64 + 1
        elif length_kind == 1:
            length = AWKWARD_LENGTHS[length_val % len(AWKWARD_LENGTHS)]
        elif length_kind == 2:
            length = length_val % cap + 1
        else:  # exactly fills up to the next 4 KiB of the packet (a buffer's end), give or take 1
            length = max(1, PAGE_SIZE - (MAX_PACKET - budget) % PAGE_SIZE + slack % 3 - 1)
        length = min(length, cap)
        room = size - length
        if offset_kind == 0:
            offset = 0
        elif offset_kind == 1:  # starts near a 4 KiB boundary of the compound page
            offset = (offset_val % (1 << order) + 1) * PAGE_SIZE + slack
        elif offset_kind == 2:
            offset = offset_val % (room + 1)
        else:  # ends near a 4 KiB boundary
            offset = (offset_val % (1 << order) + 1) * PAGE_SIZE - length + slack
        out.append(Piece(max(0, min(offset, room)), length, order))
        budget -= length
    layout = tuple(out)
    validate_layout(layout)
    return layout


_raw = st.tuples(
    st.integers(0, MAX_ORDER),
    st.integers(0, 3),
    st.integers(0, BIGGEST),
    st.integers(0, 3),
    st.integers(0, BIGGEST),
    st.integers(-64, 64),
)


def layouts(max_order: int = MAX_ORDER, max_frags: int = MAX_SKB_FRAGS) -> st.SearchStrategy[Layout]:
    return st.lists(_raw, min_size=1, max_size=max_frags + 1).map(lambda raws: shape(raws, max_order))
