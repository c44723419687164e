"""Seed 004's own ``count_skb_slots`` against the copy that has to chunk at 4 KiB frames.

The seed counts whole frags and assumes the head lies inside one page.  With order-0 pages
that is exactly what the copy does, so the two agree; with compound pages they disagree in
both directions, and the under-count is a ring overrun."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from rxpack_strategies import layouts

from xennet.netback.rxpolicy import SeedBug, SeedPacking, check_packing, seed_original_count
from xennet.packet.skb import Layout, Piece

SEED = SeedPacking()
QUICK = settings(max_examples=400, deadline=None)


def in_one_page(layout: Layout) -> bool:
    head = layout[0]
    return head.offset % 4096 + head.length <= 4096


@QUICK
@given(layout=layouts(max_order=0), gso=st.booleans())
def test_agrees_without_compound_pages(layout: Layout, gso: bool) -> None:
    # order 0: every head/frag is one chunk, so whole-frag and per-chunk rules coincide
    assert seed_original_count(layout, gso) == SEED.plan(layout, gso).slots


# (layout, what the seed estimates, what the copy uses)
UNDER: list[tuple[Layout, int, int]] = [
    # head 1 byte; frag of 4097 bytes at offset 0 of an order-1 page.  The seed sees one frag
    # bigger than a buffer, so rule (i) does not apply: it fills the head's buffer (4095) and
    # spills 2 bytes: 2 buffers.  The copy must cut the frag at the frame: 4096 + 1.  The
    # 4096-byte chunk does not fit behind the head, so it opens buffer 2 and fills it; the
    # last byte opens buffer 3.
    ((Piece(0, 1, 0), Piece(0, 4097, 1)), 2, 3),
    # the same with a 3000-byte head and a 5000-byte frag: seed 2 (4096 + 3904), copy 3
    ((Piece(0, 3000, 0), Piece(0, 5000, 1)), 2, 3),
    # fifteen such frags: each costs the copy two buffers, the seed one (61456 bytes)
    ((Piece(0, 1, 0), *[Piece(0, 4097, 1)] * 15), 16, 31),
    # seed 002's worst layout (head kept inside a page): 70 + 15 x (1+4096+1) + 2 x (1+1)
    ((Piece(0, 70, 0), *[Piece(4095, 4098, 2)] * 15, *[Piece(4095, 2, 1)] * 2), 16, 31),
]

OVER: list[tuple[Layout, int, int]] = [
    # head 1 byte; 4096-byte frag at offset 1 of an order-1 page (chunks 4095 + 1); a 1-byte
    # frag.  The seed: the 4096-byte frag would overflow the head's buffer and fits a whole
    # one, so it moves (buffer 2, full); the last byte opens buffer 3.  The copy: the
    # 4095-byte chunk fits exactly behind the head, the 1-byte chunk opens buffer 2 and the
    # last frag joins it: 2.
    ((Piece(0, 1, 0), Piece(1, 4096, 1), Piece(0, 1, 0)), 3, 2),
    # a small frag across a frame boundary (46 + 54 bytes) lets the copy use the space the
    # seed leaves: head 4000; 100 bytes at 4050 (order 1); 4000 bytes.  Seed 3, copy 2.
    ((Piece(0, 4000, 0), Piece(4050, 100, 1), Piece(0, 4000, 0)), 3, 2),
]


@pytest.mark.parametrize(("layout", "seed", "copy"), UNDER + OVER)
def test_counterexamples(layout: Layout, seed: int, copy: int) -> None:
    assert seed_original_count(layout, False) == seed
    plan = check_packing(SEED, layout, False)
    assert plan.slots == copy
    assert seed_original_count(layout, True) == seed + 1 and SEED.estimate(layout, True) == copy + 1


def test_sizes_of_the_minimal_under_count() -> None:
    assert SEED.plan((Piece(0, 1, 0), Piece(0, 4097, 1)), False).sizes == (1, 4096, 1)
    assert SEED.plan((Piece(0, 1, 0), Piece(1, 4096, 1), Piece(0, 1, 0)), False).sizes == (4096, 2)


def test_head_crossing_4k() -> None:
    # the seed BUG()s on any head crossing a 4 KiB boundary, even one the copy puts in one buffer
    head_200 = (Piece(4000, 200, 1),)
    with pytest.raises(SeedBug):
        seed_original_count(head_200, False)
    assert SEED.plan(head_200, False).sizes == (200,)  # two copies (96 + 104), one buffer
    # with the BUG_ON compiled out it counts headlen as one buffer: a 6000-byte head is 2
    head_6000 = (Piece(0, 6000, 1),)
    assert seed_original_count(head_6000, False, bug_on=False) == 1
    assert SEED.plan(head_6000, False).sizes == (4096, 1904)


def test_disagreement_is_found_both_ways() -> None:
    """The property checker finds the seed estimate wrong in both directions on its own."""

    def differs(sign: int) -> Callable[[Layout], bool]:
        def cond(layout: Layout) -> bool:
            if not in_one_page(layout):
                return False
            return sign * (SEED.plan(layout, False).slots - seed_original_count(layout, False)) > 0

        return cond

    quick = settings(max_examples=3000, database=None, phases=[Phase.generate])
    under = find(layouts(), differs(+1), settings=quick)
    over = find(layouts(), differs(-1), settings=quick)
    assert seed_original_count(under, False) < SEED.estimate(under, False)
    assert seed_original_count(over, False) > SEED.estimate(over, False)
