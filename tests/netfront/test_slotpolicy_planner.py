"""The relayout planner against an exhaustive search, on pages scaled down to a few bytes.

The brute force knows nothing of cut points: it tries every partition of the byte stream
into consecutive runs, each run either kept in place (when it lies inside one original
buffer) or copied to a fresh page, and keeps the valid partition with the fewest copied
bytes, then slots, then buffers.  The planner must reach the same triple, and its plan must
pass an independent validity check.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xennet.netfront.slotpolicy import Copied, Kept, NoPlan, RelayoutPlan, relayout_plan
from xennet.packet.skb import Piece
from xennet.platform.base import MAX_ORDER

Triple = tuple[int, int, int]  # (bytes copied, slots, buffers)


def frames(offset: int, length: int, page: int) -> int:
    return (offset + length - 1) // page - offset // page + 1


def brute_force(
    layout: Sequence[Piece], max_slots: int, max_bufs: int, page: int, head_min: int
) -> Triple | None:
    total = sum(p.length for p in layout)
    hmin = min(head_min, total)
    owner: list[tuple[int, int]] = []  # per packet byte: (buffer, offset in its page)
    buf_end: list[int] = []
    pos = 0
    for i, p in enumerate(layout):
        for k in range(p.length):
            owner.append((i, p.offset + k))
            buf_end.append(pos + p.length)
        pos += p.length
    best: Triple | None = None

    def walk(pos: int, copied: int, slots: int, bufs: int) -> None:
        nonlocal best
        if pos == total:
            if best is None or (copied, slots, bufs) < best:
                best = (copied, slots, bufs)
            return
        if bufs == max_bufs:
            return
        _, page_off = owner[pos]
        for end in range(pos + 1, total + 1):
            n = end - pos
            # copied to offset 0 of a fresh page: ceil(n / page) slots
            s = -(-n // page)
            first = min(n, page)
            if slots + s <= max_slots and n <= page << MAX_ORDER and (pos or first >= hmin):
                walk(end, copied + n, slots + s, bufs + 1)
            # kept in place: only inside one original buffer
            if end <= buf_end[pos]:
                s = frames(page_off, n, page)
                first = min(n, page - page_off % page)
                if slots + s <= max_slots and (pos or first >= hmin):
                    walk(end, copied, slots + s, bufs + 1)

    walk(0, 0, 0, 0)
    return best


def check_plan(
    plan: RelayoutPlan, layout: Sequence[Piece], max_slots: int, max_bufs: int, page: int, head_min: int
) -> Triple:
    """Re-derive everything about the plan from its buffers and the input layout."""
    starts = []
    pos = 0
    for p in layout:
        starts.append(pos)
        pos += p.length
    total = pos
    assert plan.bufs, "a plan has at least one buffer"
    pos = copied = slots = 0
    for b in plan.bufs:
        assert b.pos == pos and b.length >= 1
        if isinstance(b, Kept):
            src = layout[b.src]
            assert 0 <= b.skip and b.skip + b.length <= src.length
            assert starts[b.src] + b.skip == b.pos, "kept bytes must be the same packet bytes"
            s = frames(src.offset + b.skip, b.length, page)
            first = min(b.length, page - (src.offset + b.skip) % page)
        else:
            assert isinstance(b, Copied)
            assert page << b.order >= b.length and (b.order == 0 or page << (b.order - 1) < b.length)
            s = -(-b.length // page)
            first = min(b.length, page)
            copied += b.length
        if pos == 0:
            assert first >= min(head_min, total), "the first slot must carry the header"
        assert b.slots == s
        slots += s
        pos += b.length
    assert pos == total
    assert slots == plan.slots <= max_slots
    assert len(plan.bufs) <= max_bufs
    assert copied == plan.bytes_copied
    return copied, slots, len(plan.bufs)


@st.composite
def small_case(draw: st.DrawFn) -> tuple[tuple[Piece, ...], int, int, int, int]:
    page = draw(st.sampled_from([4, 8]))
    n = draw(st.integers(1, 4))
    budget = draw(st.integers(n, 9))  # total bytes: 3^(total-1) partitions at most
    pieces: list[Piece] = []
    for i in range(n):
        order = draw(st.integers(0, 2))
        size = page << order
        room = budget - (n - i - 1) - sum(p.length for p in pieces)
        length = draw(st.integers(1, max(1, min(room, size))))
        offset = draw(st.integers(0, size - length))
        pieces.append(Piece(offset, length, order))
    max_slots = draw(st.integers(1, 8))
    max_bufs = draw(st.integers(1, 5))
    head_min = draw(st.integers(1, min(3, page)))
    return tuple(pieces), max_slots, max_bufs, page, head_min


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_case())
def test_planner_matches_brute_force(case: tuple[tuple[Piece, ...], int, int, int, int]) -> None:
    layout, max_slots, max_bufs, page, head_min = case
    want = brute_force(layout, max_slots, max_bufs, page, head_min)
    try:
        plan = relayout_plan(layout, max_slots, max_bufs, page_size=page, head_min=head_min)
    except NoPlan:
        assert want is None, f"planner found nothing, brute force found {want}"
        return
    got = check_plan(plan, layout, max_slots, max_bufs, page, head_min)
    assert want is not None
    assert got == want


def test_brute_force_needs_unaligned_kept_ranges() -> None:
    """A case where the optimum keeps a range that starts inside a buffer, at a frame boundary."""
    # page 4: a 10-byte frag at offset 3 spans frames [3], [4..7], [8..11], [12] = 4 slots;
    # copy the head and the frag's first byte (1 slot), keep the other 9 bytes (3 slots).
    layout = (Piece(0, 3, 0), Piece(3, 10, 2))
    want = brute_force(layout, 4, 4, 4, 1)
    plan = relayout_plan(layout, 4, 4, page_size=4, head_min=1)
    assert check_plan(plan, layout, 4, 4, 4, 1) == want == (4, 4, 2)
    assert plan.bufs[1] == Kept(pos=4, length=9, src=1, skip=1, slots=3)


def test_head_rule_forces_a_copy() -> None:
    """A head with 2 bytes before a page boundary fits in slots but not in the header rule."""
    layout = (Piece(6, 5, 1), Piece(0, 4, 0))  # page 8: head's first frame holds 2 bytes < 3
    plan = relayout_plan(layout, 4, 4, page_size=8, head_min=3)
    assert check_plan(plan, layout, 4, 4, 8, 3) == brute_force(layout, 4, 4, 8, 3)
    assert isinstance(plan.bufs[0], Copied) and plan.bytes_copied >= 3


def test_no_plan_when_even_a_full_copy_needs_too_many_slots() -> None:
    with pytest.raises(NoPlan):
        relayout_plan((Piece(0, 20, 2),), 2, 4, page_size=8, head_min=1)  # 20 bytes need 3 pages


WORST = (Piece(4096 - 35, 70, 1),) + (Piece(4095, 4098, 2),) * 15 + (Piece(4095, 2, 1),) * 2


def test_worst_case_plan_and_speed() -> None:
    t0 = time.perf_counter()
    plan = relayout_plan(WORST, 18)
    elapsed = time.perf_counter() - t0
    check_plan(plan, WORST, 18, 18, 4096, 14)
    # 61544 bytes in 18 slots: keeping two of the 15 page-aligned 4 KiB middles is the most
    # that fits (each kept range splits the copy, costing a partial page on each side).
    assert plan.bytes_copied == 61544 - 2 * 4096
    assert plan.slots == 18
    assert elapsed < 0.05, f"planner took {elapsed * 1000:.1f} ms"


@pytest.mark.parametrize("max_slots", [18, 20, 25, 30, 40, 51])
def test_bigger_slot_limits_copy_less(max_slots: int) -> None:
    plan = relayout_plan(WORST, max_slots)
    check_plan(plan, WORST, max_slots, 18, 4096, 14)
    if max_slots >= 51:
        assert plan.bytes_copied == 0
    smaller = relayout_plan(WORST, max_slots - 1)
    assert plan.bytes_copied <= smaller.bytes_copied


def test_keeps_a_frame_aligned_prefix_on_real_pages() -> None:
    """Head 1 slot, a frag of 96 + 4096 + 50 bytes (3 slots), a 2-byte frag across a boundary
    (2 slots): 6 slots.  With 4, keep the head and the frag's first 4192 bytes, copy 50 + 2."""
    layout = (Piece(0, 100, 0), Piece(4000, 96 + 4096 + 50, 2), Piece(4095, 2, 1))
    plan = relayout_plan(layout, 4)
    assert check_plan(plan, layout, 4, 18, 4096, 14) == (52, 4, 3)
    assert [type(b) for b in plan.bufs] == [Kept, Kept, Copied]
