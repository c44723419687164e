"""Packing policies: the checker proves estimate == plan slots and that plans copy correctly."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from live_copies import FlatPages, live_copies, run_local
from rxpack_strategies import layouts

from xennet.netback.rxpolicy import (
    PACKING_POLICIES,
    Chunk,
    FullPacking,
    PackingPolicy,
    PlanError,
    RxPlan,
    SeedPacking,
    check_packing,
    check_plan,
    packing_policy,
)
from xennet.packet.skb import Layout, Piece, build_skb
from xennet.platform.base import PAGE_SIZE

POLICIES = sorted(PACKING_POLICIES)
CHECKER = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_copies(layout: Layout, policy: PackingPolicy, plan: RxPlan, seed: int) -> None:
    """Carry the packet out the live way (``skb_pieces``, the core's ``netback_rx_plan``): the
    buffers, concatenated, must be the packet, filled as the policy's plan says."""
    data = random.Random(seed).randbytes(sum(p.length for p in layout))
    pages = FlatPages()
    skb = build_skb(data, layout, pages)
    live = live_copies(skb, policy.core_id)
    assert live.sizes == list(plan.sizes)
    assert len(live.copies) == plan.copies
    assert run_local(pages.mem, live) == data


@CHECKER
@given(layout=layouts(), gso=st.booleans(), seed=st.integers(0, 2**32))
def test_estimate_equals_plan_and_plan_is_valid(layout: Layout, gso: bool, seed: int) -> None:
    """The checker, for every packing policy, on the same random layouts."""
    total = sum(p.length for p in layout)
    plans = {}
    for name in POLICIES:
        policy = packing_policy(name)
        plan = check_packing(policy, layout, gso)  # valid plan, estimate == plan.slots
        assert plan.slots == policy.estimate(layout, gso) == plan.nbuffers + gso
        assert all(0 < s <= PAGE_SIZE for s in plan.sizes) and plan.sizes[0] > 0
        assert plan.length == total
        run_copies(layout, policy, plan, seed)
        plans[name] = plan
    # full: ceil(len / 4096) buffers, all full but the last: nobody can do with fewer
    full = plans["full"]
    assert full.nbuffers == -(-total // PAGE_SIZE)
    assert all(s == PAGE_SIZE for s in full.sizes[:-1])
    # seed: at least as many; the rule works per 4 KiB chunk and never splits one
    seed_plan = plans["seed"]
    assert seed_plan.nbuffers >= full.nbuffers
    assert seed_plan.copies == sum(p.slots() for p in layout)


def edge_layouts() -> list[Layout]:
    """Every head with up to two frags from small sets of edge values: buffers filled exactly,
    to one byte under and over, frags ending or starting at 4 KiB frames, or spanning them."""
    heads = [Piece(0, n, 0) for n in (1, 2, 1000, 3000, 4000, 4046, 4095, 4096)]
    heads += [Piece(4000, 200, 1), Piece(0, 6000, 1), Piece(4095, 4098, 2)]

    def frags(lengths: tuple[int, ...], offsets: tuple[int, ...]) -> list[Piece]:
        out = []
        for n in lengths:
            for o in offsets:
                order = max(0, (o + n - 1).bit_length() - 12)
                out.append(Piece(o, n, order))
        return out

    one = frags((1, 2, 46, 50, 96, 1046, 1096, 3000, 4000, 4050, 4095, 4096, 4097, 8192), (0, 1, 4046, 4095))
    two = frags((1, 50, 1046, 4050, 4096, 4097), (0, 4046, 4095))
    out: list[Layout] = [(h,) for h in heads]
    out += [(h, f) for h in heads for f in one]
    out += [(h, f, g) for h in heads for f in two for g in two]
    return out


@pytest.mark.parametrize("name", POLICIES)
def test_edge_grid(name: str) -> None:
    policy = packing_policy(name)
    for layout in edge_layouts():
        for gso in (False, True):
            check_packing(policy, layout, gso)


def sizes(policy: PackingPolicy, *layout: Piece) -> tuple[int, ...]:
    return check_packing(policy, layout, False).sizes


def test_seed_examples() -> None:
    seed = SeedPacking()
    # small frags are packed behind the head
    assert sizes(seed, Piece(0, 100, 0), Piece(0, 200, 0), Piece(50, 300, 0)) == (600,)
    # a frag that would overflow but fits the next buffer moves there whole
    assert sizes(seed, Piece(0, 3000, 0), Piece(0, 2000, 0)) == (3000, 2000)
    # full is full: even one byte opens a new buffer
    assert sizes(seed, Piece(0, 4096, 0), Piece(0, 1, 0)) == (4096, 1)
    # a head bigger than a buffer (compound page) is split at its 4 KiB frames
    assert sizes(seed, Piece(100, 6000, 1)) == (3996, 2004)
    # a head crossing 4 KiB: two grant copies, one buffer
    plan = check_packing(seed, (Piece(4000, 200, 1),), True)
    assert plan.buffers == ((Chunk(0, 4000, 0, 96), Chunk(0, 4096, 96, 104)),) and plan.slots == 2
    # per-chunk unit: a frag on an order-1 page is two chunks; each moves whole
    assert sizes(seed, Piece(0, 3000, 0), Piece(100, 6000, 1)) == (3000, 3996, 2004)
    assert sizes(seed, Piece(0, 1, 0), Piece(0, 4097, 1)) == (1, 4096, 1)
    full = FullPacking()
    assert sizes(full, Piece(0, 3000, 0), Piece(100, 6000, 1)) == (4096, 4096, 808)
    assert sizes(full, Piece(0, 1, 0), Piece(0, 4097, 1)) == (4096, 2)


def test_gso_extra_slot_follows_first_response() -> None:
    plan = SeedPacking().plan((Piece(0, 3000, 0), Piece(0, 3000, 0), Piece(0, 3000, 0)), True)
    assert plan.nbuffers == 3 and plan.slots == 4
    assert [plan.slot_of(i) for i in range(3)] == [0, 2, 3]
    assert SeedPacking().plan((Piece(0, 10, 0),), False).slot_of(0) == 0


def test_empty_packet_is_refused() -> None:
    for name in POLICIES:
        with pytest.raises(PlanError):
            packing_policy(name).plan((Piece(0, 0, 0),), False)
        with pytest.raises(PlanError):
            packing_policy(name).estimate((Piece(0, 0, 0),), False)


def test_unknown_policy_name() -> None:
    with pytest.raises(ValueError, match="full, seed"):
        packing_policy("greedy")
    assert packing_policy("seed").name == "seed" and packing_policy("full").name == "full"


# -- the checker itself must be able to fail -------------------------------------------

LAYOUT: Layout = (Piece(4000, 200, 1), Piece(100, 6000, 1), Piece(0, 10, 0))


def mutated(plan: RxPlan, buffers: list[list[Chunk]], sizes: list[int] | None = None) -> RxPlan:
    return RxPlan(tuple(tuple(b) for b in buffers), tuple(sizes or plan.sizes), plan.gso)


@pytest.mark.parametrize(
    "mutate",
    [
        "drop_last_chunk",
        "swap_buffers",
        "duplicate_chunk",
        "cross_src_frame",
        "overflow_buffer",
        "empty_buffer",
        "empty_first_buffer",
        "wrong_size",
        "gap_in_buffer",
        "gso_mismatch",
    ],
)
def test_checker_rejects_broken_plans(mutate: str) -> None:
    good = SeedPacking().plan(LAYOUT, False)
    check_plan(LAYOUT, False, good)
    b = [list(x) for x in good.buffers]
    sz = list(good.sizes)
    gso = False
    if mutate == "drop_last_chunk":
        b[-1].pop()
        sz[-1] = sum(c.length for c in b[-1])
        bad = mutated(good, b, sz)
    elif mutate == "swap_buffers":
        bad = mutated(good, [b[1], b[0], *b[2:]], [sz[1], sz[0], *sz[2:]])
    elif mutate == "duplicate_chunk":
        c = b[0][-1]
        b[0].append(Chunk(c.src_index, c.src_offset, c.dst_offset + c.length, c.length))
        sz[0] += c.length
        bad = mutated(good, b, sz)
    elif mutate == "cross_src_frame":
        # the head copied in one piece: 200 bytes from 4000 cross the frame at 4096
        b[0] = [Chunk(0, 4000, 0, 200)]
        bad = mutated(good, b)
    elif mutate == "overflow_buffer":
        merged = [*b[1], *(Chunk(c.src_index, c.src_offset, c.dst_offset + sz[1], c.length) for c in b[2])]
        bad = mutated(good, [b[0], merged, *b[3:]], [sz[0], sz[1] + sz[2], *sz[3:]])
    elif mutate == "empty_buffer":
        bad = mutated(good, [*b[:2], [], *b[2:]], [*sz[:2], 0, *sz[2:]])
    elif mutate == "empty_first_buffer":
        bad = mutated(good, [[], *b], [0, *sz])
    elif mutate == "wrong_size":
        sz[0] += 1
        bad = mutated(good, b, sz)
    elif mutate == "gap_in_buffer":
        b[0] = [Chunk(c.src_index, c.src_offset, c.dst_offset + 1, c.length) for c in b[0]]
        sz[0] += 1
        bad = mutated(good, b, sz)
    else:
        gso = True
        bad = good
    with pytest.raises(PlanError):
        check_plan(LAYOUT, gso, bad)


class WholePieceCopy:
    """A broken policy: one copy per head/frag, ignoring 4 KiB source frames."""

    name = "whole-piece"

    def plan(self, layout: Sequence[Piece], gso: bool) -> RxPlan:
        return FullPacking().plan(tuple(Piece(0, p.length, 4) for p in layout), gso)

    def estimate(self, layout: Sequence[Piece], gso: bool) -> int:
        return FullPacking().estimate(layout, gso)


class OffByOneEstimate(SeedPacking):
    name = "seed-off-by-one"

    def estimate(self, layout: Sequence[Piece], gso: bool) -> int:
        n = super().estimate(layout, gso)
        return n - 1 if len(layout) > 3 else n


@pytest.mark.parametrize("broken", [WholePieceCopy(), OffByOneEstimate()])
def test_checker_finds_broken_policies(broken: PackingPolicy) -> None:
    found = find(
        layouts(),
        lambda layout: _fails(broken, layout),
        settings=settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert _fails(broken, found)


def _fails(policy: PackingPolicy, layout: Layout) -> bool:
    try:
        check_packing(policy, layout, False)
    except PlanError:
        return True
    return False
