"""Hypothesis strategies for packet layouts: compound pages (order 0-4), misaligned offsets,
heads and frags crossing 4 KiB boundaries, tiny and page-sized pieces, up to 17 frags and
64 KiB in all.  (Built from a few fixed strategies: drawing is the slow part of these tests.)"""

from __future__ import annotations

from hypothesis import strategies as st

from xennet.packet.skb import MAX_PACKET, MAX_SKB_FRAGS, Layout, Piece, validate_layout
from xennet.platform.base import MAX_ORDER, PAGE_SIZE

AWKWARD_LENGTHS = (1, 2, 3, 14, 54, 66, 4094, 4095, 4096, 4097, 4098, 8191, 8192, 8193, 12289)
BIGGEST = PAGE_SIZE << MAX_ORDER

_kind = st.integers(0, 2)
_small = st.integers(1, 64)
_awkward = st.sampled_from(AWKWARD_LENGTHS)
_any = st.integers(0, BIGGEST)
_slack = st.integers(-64, 64)


@st.composite
def pieces(draw: st.DrawFn, budget: int, max_order: int = MAX_ORDER) -> Piece:
    order = draw(st.integers(0, max_order))
    size = PAGE_SIZE << order
    cap = min(size, budget)
    kind = draw(_kind)
    if kind == 0:
        length = draw(_small)
    elif kind == 1:
        length = draw(_awkward)
    else:
        length = draw(_any) % cap + 1
    length = min(length, cap)
    room = size - length
    kind = draw(_kind)
    if kind == 0:
        offset = 0
    elif kind == 1:  # near a 4 KiB boundary inside the compound page
        offset = (draw(_any) % (1 << order) + 1) * PAGE_SIZE + draw(_slack)
    else:
        offset = draw(_any) % (room + 1)
    return Piece(max(0, min(offset, room)), length, order)


@st.composite
def layouts(draw: st.DrawFn, max_order: int = MAX_ORDER, max_frags: int = MAX_SKB_FRAGS) -> Layout:
    budget = MAX_PACKET
    head = draw(pieces(budget, max_order))
    out = [head]
    budget -= head.length
    for _ in range(draw(st.integers(0, max_frags))):
        if budget <= 0:
            break
        frag = draw(pieces(budget, max_order))
        out.append(frag)
        budget -= frag.length
    layout = tuple(out)
    validate_layout(layout)
    return layout
