"""From an skb to grant copies, the live way (``skb_pieces`` and the core's
``netback_rx_plan``): local frames of compound pages, foreign frags copied straight from the
other guest's grant (seed 003), the bounds no copy may leave; run for real in the world."""

from __future__ import annotations

import random

import pytest
from live_copies import Copy, FlatPages, live_copies, run_local

from xennet.core import records as r
from xennet.core.vec import Piece as VecPiece
from xennet.netback.rx import skb_pieces
from xennet.netback.rxpolicy import FullPacking, SeedPacking
from xennet.packet.skb import Buf, Foreign, Piece, Skb, build_skb
from xennet.platform.base import PAGE_SIZE, Page
from xennet.world.local import LocalWorld

SEED, FULL = SeedPacking.core_id, FullPacking.core_id


def test_local_copies_name_frames_of_the_compound_page() -> None:
    pages = FlatPages()
    data = bytes(range(256)) * 40
    skb = build_skb(data, (Piece(4000, 240, 1), Piece(100, 10000, 2)), pages)
    h, f = skb.head.page.frame, skb.frags[0].page.frame
    live = live_copies(skb, SEED)
    g = 500  # the first posted buffer's grant
    assert live.copies == [
        Copy((h, 4000), g, 0, 96),
        Copy((h + 1, 0), g, 96, 144),
        Copy((f, 100), g + 1, 0, 3996),
        Copy((f + 1, 0), g + 2, 0, 4096),
        Copy((f + 2, 0), g + 3, 0, 1908),
    ]
    assert run_local(pages.mem, live) == data


def test_foreign_frag_is_copied_from_its_grant() -> None:
    pages = FlatPages()
    skb = build_skb(b"h" * 60 + b"f" * 1000, (Piece(0, 60, 0), Piece(2000, 1000, 0)), pages)
    f = skb.frags[0]
    skb.frags[0] = Buf(f.page, f.offset, f.length, Foreign(domid=7, gref=33, offset=500))
    live = live_copies(skb, FULL)
    assert live.copies == [Copy((skb.head.page.frame, 0), 500, 0, 60), Copy((7, 33, 500), 500, 60, 1000)]
    assert live.sizes == [1060]


def test_foreign_runs_split_a_chunk_per_grant() -> None:
    """A head pulled together from two tx slots: 96 bytes of grant 33, 904 bytes of grant 44."""
    pages = FlatPages()
    skb = build_skb(b"x" * 1000, (Piece(0, 1000, 0),), pages)
    h = skb.head
    runs = ((Foreign(7, 33, 4000), 96), (Foreign(7, 44, 0), 904))
    skb.head = Buf(h.page, h.offset, h.length, runs[0][0], runs)
    assert skb_pieces(skb) == [
        VecPiece(33, 4000, 96, r.NONE32, 7, 0),
        VecPiece(44, 0, 904, r.NONE32, 7, 0),
    ]
    assert live_copies(skb, SEED).copies == [Copy((7, 33, 4000), 500, 0, 96), Copy((7, 44, 0), 500, 96, 904)]


def _bad_skbs() -> dict[str, Skb]:
    pages = FlatPages()
    out = {}
    skb = build_skb(b"x" * 1000, (Piece(0, 1000, 0),), pages)
    h = skb.head
    short = ((Foreign(7, 33, 4000), 96),)  # runs that do not cover the buffer
    skb.head = Buf(h.page, h.offset, h.length, short[0][0], short)
    out["runs_short"] = skb
    skb = build_skb(b"x" * 1000, (Piece(0, 1000, 0),), pages)
    skb.head = Buf(h.page, h.offset, h.length, Foreign(7, 33, 3500))  # past the granted page
    out["grant_page_left"] = skb
    skb = build_skb(b"x" * 100, (Piece(0, 100, 0),), pages)
    skb.head = Buf(Page(skb.head.page.frame, 0, skb.head.page.view), 4090, 100)  # past its page
    out["local_page_left"] = skb
    return out


@pytest.mark.parametrize("case", sorted(_bad_skbs()))
def test_bytes_no_copy_may_name_are_refused(case: str) -> None:
    with pytest.raises(ValueError, match="leave|cover"):
        skb_pieces(_bad_skbs()[case])


@pytest.mark.parametrize("case", sorted(_bad_skbs()))
def test_the_vif_drops_and_counts_an_skb_no_copy_may_carry(world: LocalWorld, case: str) -> None:
    world.attach()
    vif = world.vif()
    skb = _bad_skbs()[case]
    assert not vif.send_to_guest(skb)
    assert vif.stats.rx_dropped["bad_pieces"] == 1
    assert world.deliver([b"\x02" * 60]) == 1 and len(world.to_guest[(1, 0)]) == 1  # still fine


@pytest.mark.parametrize("packing", ["seed", "full"])
def test_a_foreign_frag_reaches_b_from_a_grant(packing: str) -> None:
    """dom0 holds an skb: a head crossing 4 KiB on an order-1 page, a frag that is guest A's
    (dom2) granted page, a large frag on an order-2 page; it goes to guest B (dom1).  The
    foreign frag's local bytes are garbage on purpose: the data must come from A's grant."""
    from xennet.netback.interface import NetbackConfig

    with LocalWorld(backend_config=NetbackConfig(rx_packing=packing), guest_domids=(1, 2)) as world:
        world.attach()
        back, guest_a = world.platforms[0], world.platforms[2]
        rng = random.Random(4)
        head_data, a_data, big_data = rng.randbytes(300), rng.randbytes(1500), rng.randbytes(9000)
        a_page = guest_a.memory.alloc(0)
        a_page.view[700:2200] = a_data
        a_ref = guest_a.grants.grant_access(0, a_page.frame, readonly=True)
        head_page, big_page = back.memory.alloc(1), back.memory.alloc(2)
        head_page.view[3900:4200] = head_data
        big_page.view[5:9005] = big_data
        junk = Page.outside(memoryview(bytearray(b"\xee" * PAGE_SIZE)))
        skb = Skb(
            Buf(head_page, 3900, 300),
            [Buf(junk, 700, 1500, Foreign(2, a_ref, 700)), Buf(big_page, 5, 9000)],
            pages=[head_page, big_page],
            source=back.memory,
        )
        vif = world.vif()
        assert vif.send_to_guest(skb)
        vif.kick_rx()
        world.pump()
        assert world.to_guest[(1, 0)] == [head_data + a_data + big_data]
        assert vif.stats.rx_bytes_forwarded == 1500
        assert guest_a.grants.end_access(a_ref)
        guest_a.memory.free(a_page)
