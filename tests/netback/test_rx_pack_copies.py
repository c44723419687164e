"""From a plan to grant copies: local frames of compound pages, and foreign frags copied
straight from the other guest's grant (seed 003); run for real on the sim hypervisor."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator

import pytest

from xennet.abi.grant_table import DOMID_SELF, GNTST_okay
from xennet.netback.rxpolicy import (
    CopySpec,
    ForeignSource,
    FullPacking,
    LocalSource,
    PlanError,
    SeedPacking,
    copy_specs,
    grant_copies,
)
from xennet.packet.skb import Buf, Foreign, HeapPages, Piece, Skb, build_skb
from xennet.platform.base import PAGE_SIZE, CopyPtr, Page
from xennet.platform.sim import SimWorld


def test_local_specs_name_frames_of_the_compound_page() -> None:
    skb = build_skb(bytes(range(256)) * 40, (Piece(4000, 240, 1), Piece(100, 10000, 2)), HeapPages())
    plan = SeedPacking().plan(skb.layout, False)
    assert copy_specs(skb, plan) == [
        CopySpec(0, LocalSource(0, 4000), 0, 0, 96),
        CopySpec(0, LocalSource(1, 0), 0, 96, 144),
        CopySpec(1, LocalSource(0, 100), 1, 0, 3996),
        CopySpec(1, LocalSource(1, 0), 2, 0, 4096),
        CopySpec(1, LocalSource(2, 0), 3, 0, 1908),
    ]


def test_foreign_frag_is_copied_from_its_grant() -> None:
    heap = HeapPages()
    skb = build_skb(b"h" * 60 + b"f" * 1000, (Piece(0, 60, 0), Piece(2000, 1000, 0)), heap)
    f = skb.frags[0]
    skb.frags[0] = Buf(f.page, f.offset, f.length, Foreign(domid=7, gref=33, offset=500))
    plan = FullPacking().plan(skb.layout, True)
    assert copy_specs(skb, plan) == [
        CopySpec(0, LocalSource(0, 0), 0, 0, 60),
        CopySpec(1, ForeignSource(7, 33, 500), 0, 60, 1000),
    ]
    ops = grant_copies(skb, plan, [91], dest_domid=5)
    assert ops[1].source == CopyPtr(33, 7, 500, is_gref=True)
    assert ops[1].dest == CopyPtr(91, 5, 60, is_gref=True)
    assert ops[0].source.domid == DOMID_SELF and not ops[0].source.is_gref
    with pytest.raises(PlanError):  # one gref per buffer
        grant_copies(skb, plan, [91, 92], dest_domid=5)
    # a foreign buffer is one granted page: it cannot run past it
    skb.frags[0] = Buf(f.page, f.offset, f.length, Foreign(7, 33, 3500))
    with pytest.raises(PlanError):
        copy_specs(skb, plan)


def test_foreign_runs_split_a_chunk_per_grant() -> None:
    """A head pulled together from two tx slots: 96 bytes of grant 33, 904 bytes of grant 44."""
    heap = HeapPages()
    skb = build_skb(b"x" * 1000, (Piece(0, 1000, 0),), heap)
    h = skb.head
    runs = ((Foreign(7, 33, 4000), 96), (Foreign(7, 44, 0), 904))
    skb.head = Buf(h.page, h.offset, h.length, runs[0][0], runs)
    plan = SeedPacking().plan(skb.layout, False)
    assert plan.copies == 1
    assert copy_specs(skb, plan) == [
        CopySpec(0, ForeignSource(7, 33, 4000), 0, 0, 96),
        CopySpec(0, ForeignSource(7, 44, 0), 0, 96, 904),
    ]
    short = ((Foreign(7, 33, 4000), 96),)  # runs that do not cover the buffer
    skb.head = Buf(h.page, h.offset, h.length, short[0][0], short)
    with pytest.raises(PlanError):
        copy_specs(skb, plan)


def test_plan_for_another_skb_is_refused() -> None:
    heap = HeapPages()
    big = build_skb(b"x" * 5000, (Piece(0, 5000, 1),), heap)
    small = build_skb(b"x" * 50, (Piece(0, 50, 0),), heap)
    with pytest.raises(PlanError):
        copy_specs(small, SeedPacking().plan(big.layout, False))


@pytest.fixture
def world() -> Iterator[SimWorld]:
    w = SimWorld.create(f"rxpack{os.getpid()}-{secrets.token_hex(3)}")
    try:
        yield w
    finally:
        w.destroy()


@pytest.mark.parametrize("packing", [SeedPacking(), FullPacking()], ids=["seed", "full"])
def test_grant_copies_deliver_the_packet_a_to_b(world: SimWorld, packing: SeedPacking | FullPacking) -> None:
    """dom0 (backend) holds an skb: a head crossing 4 KiB on an order-1 page, a frag that is
    guest A's (dom1) granted page, a large frag on an order-2 page; it copies into the
    buffers guest B (dom2) posted.  The foreign frag's local bytes are garbage on purpose:
    the data must come from A's grant, not through the backend."""
    for d in (0, 1, 2):
        world.create_domain(d, nr_frames=256)
    back, guest_a, guest_b = (world.platform(d) for d in (0, 1, 2))
    try:
        rng = random.Random(4)
        head_data, a_data, big_data = rng.randbytes(300), rng.randbytes(1500), rng.randbytes(9000)
        a_page = guest_a.memory.alloc(0)
        a_page.view[700:2200] = a_data
        a_ref = guest_a.grants.grant_access(0, a_page.frame, readonly=True)

        head_page, big_page = back.memory.alloc(1), back.memory.alloc(2)
        head_page.view[3900:4200] = head_data
        big_page.view[5:9005] = big_data
        junk = Page(-1, 0, memoryview(bytearray(b"\xee" * PAGE_SIZE)))
        skb = Skb(
            Buf(head_page, 3900, 300),
            [Buf(junk, 700, 1500, Foreign(1, a_ref, 700)), Buf(big_page, 5, 9000)],
        )
        plan = packing.plan(skb.layout, False)
        b_pages = [guest_b.memory.alloc(0) for _ in range(plan.nbuffers)]
        b_refs = [guest_b.grants.grant_access(0, p.frame, readonly=False) for p in b_pages]

        status = back.mapper.copy(grant_copies(skb, plan, b_refs, dest_domid=2))
        assert status == [GNTST_okay] * plan.copies
        got = b"".join(bytes(p.view[:size]) for p, size in zip(b_pages, plan.sizes, strict=True))
        assert got == head_data + a_data + big_data

        for ref in b_refs:
            assert guest_b.grants.end_access(ref)
        for p in b_pages:
            guest_b.memory.free(p)
        assert guest_a.grants.end_access(a_ref)
        guest_a.memory.free(a_page)
        back.memory.free(head_page)
        back.memory.free(big_page)
    finally:
        for platform in (back, guest_a, guest_b):
            platform.close()
