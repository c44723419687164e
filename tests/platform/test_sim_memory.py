"""sim memory: zeroed compound pages, alignment, exhaustion, accounting, and an allocator property."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xennet.platform.base import MAX_ORDER, PAGE_SIZE, Page, PlatformError
from xennet.platform.sim import SimPlatform, SimWorld


def test_alloc_is_zeroed_and_live(pair: tuple[SimPlatform, SimPlatform]) -> None:
    _, p1 = pair
    page = p1.memory.alloc(2)
    assert (page.order, page.nr_frames, page.size, len(page.view)) == (2, 4, 4 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert bytes(page.view) == bytes(page.size)
    page.view[PAGE_SIZE : PAGE_SIZE + 3] = b"abc"
    assert bytes(p1.memory.frame_view(page.frame + 1)[:3]) == b"abc"  # the same frames
    page.view[:] = b"\xee" * page.size
    p1.memory.free(page)
    again = p1.memory.alloc(2)
    assert again.frame == page.frame  # lowest free block again...
    assert bytes(again.view) == bytes(again.size)  # ...and zeroed, not the old contents
    p1.memory.free(again)
    assert p1.accounting().pages == 0


def test_compound_pages_are_aligned_to_their_order(pair: tuple[SimPlatform, SimPlatform]) -> None:
    _, p1 = pair
    pages = [p1.memory.alloc(0)]  # frame 0: every larger block must skip ahead to alignment
    for order in (1, 3, 0, 4, 2, 1, 4):
        pg = p1.memory.alloc(order)
        assert pg.frame % (1 << order) == 0, (order, pg.frame)
        pages.append(pg)
    spans = sorted((pg.frame, pg.frame + pg.nr_frames) for pg in pages)
    assert all(a_end <= b for (_, a_end), (b, _) in zip(spans, spans[1:], strict=False))
    assert p1.accounting().pages == sum(pg.nr_frames for pg in pages)
    for pg in pages:
        p1.memory.free(pg)
    assert p1.accounting().pages == 0


def test_bad_orders_double_free_and_bad_frames(pair: tuple[SimPlatform, SimPlatform]) -> None:
    _, p1 = pair
    for order in (-1, MAX_ORDER + 1):
        with pytest.raises(PlatformError):
            p1.memory.alloc(order)
    pg = p1.memory.alloc(1)
    with pytest.raises(PlatformError):  # wrong order for that head
        p1.memory.free(Page(pg.frame, 0, pg.view))
    with pytest.raises(PlatformError):  # a tail frame is not a page
        p1.memory.free(Page(pg.frame + 1, 0, pg.view))
    p1.memory.free(pg)
    with pytest.raises(PlatformError):
        p1.memory.free(pg)
    with pytest.raises(PlatformError):
        p1.memory.frame_view(10**6)
    assert p1.accounting().pages == 0


def test_out_of_memory_then_coalesced(world: SimWorld) -> None:
    world.create_domain(5, nr_frames=32)
    with world.platform(5) as p:
        small = [p.memory.alloc(0) for _ in range(32)]
        with pytest.raises(PlatformError, match="out of memory"):
            p.memory.alloc(0)
        assert world.accounting(5).pages == 32
        for pg in small:
            p.memory.free(pg)
        big = [p.memory.alloc(MAX_ORDER), p.memory.alloc(MAX_ORDER)]  # buddies merged back
        with pytest.raises(PlatformError):
            p.memory.alloc(0)
        for pg in big:
            p.memory.free(pg)
        assert world.accounting(5).pages == 0


def test_reopen_keeps_allocated_frames(world: SimWorld) -> None:
    world.create_domain(5, nr_frames=32)
    with world.platform(5) as p:
        kept = p.memory.alloc(3)
        kept_frame = kept.frame
        kept.view[:4] = b"keep"
        del kept
    with world.platform(5) as p:  # a new process for the same domain: the frame table is the truth
        assert p.accounting().pages == 8
        others = [p.memory.alloc(0) for _ in range(24)]
        assert all(not kept_frame <= pg.frame < kept_frame + 8 for pg in others)
        with pytest.raises(PlatformError):
            p.memory.alloc(0)
        assert bytes(p.memory.frame_view(kept_frame)[:4]) == b"keep"


def test_allocator_property(world: SimWorld) -> None:
    """Random alloc/free sequences: pages never overlap (by frame or by content), are aligned
    and zeroed, alloc fails exactly when no aligned free block exists, accounting matches."""
    nr = 64
    world.create_domain(6, nr_frames=nr)
    with world.platform(6) as p:
        op = st.tuples(st.booleans(), st.integers(0, MAX_ORDER), st.integers(0, 999))  # alloc?, order, pick

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(op, max_size=50))
        def run(ops: list[tuple[bool, int, int]]) -> None:
            live: dict[int, tuple[Page, int]] = {}  # frame -> (page, marker byte)
            used = [False] * nr
            try:
                for n, (is_alloc, order, pick) in enumerate(ops):
                    if is_alloc or not live:
                        size = 1 << order
                        fits = any(not any(used[s : s + size]) for s in range(0, nr, size))
                        try:
                            pg = p.memory.alloc(order)
                        except PlatformError:
                            assert not fits, f"order {order} refused with an aligned free block"
                            continue
                        assert fits
                        assert pg.frame % size == 0 and pg.frame + size <= nr
                        assert not any(used[pg.frame : pg.frame + size]), "overlapping pages"
                        assert bytes(pg.view) == bytes(pg.size)
                        marker = n % 255 + 1
                        pg.view[:] = bytes([marker]) * pg.size
                        used[pg.frame : pg.frame + size] = [True] * size
                        live[pg.frame] = (pg, marker)
                    else:
                        frame = sorted(live)[pick % len(live)]
                        pg, marker = live.pop(frame)
                        assert bytes(pg.view) == bytes([marker]) * pg.size, "someone wrote our page"
                        p.memory.free(pg)
                        used[pg.frame : pg.frame + pg.nr_frames] = [False] * pg.nr_frames
                    assert p.accounting().pages == sum(used)
            finally:
                for pg, _ in live.values():
                    p.memory.free(pg)
            assert p.accounting().pages == 0

        run()
