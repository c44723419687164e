"""The too-many-slots policies on real skbs: the seed's 51-slot worst case, a seeded random
mix, pass-through, fallbacks, ownership, and the header bounce.

Run with ``-s`` to see the comparison tables (``test_report_tables``)."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xennet.netfront.slotpolicy import (
    PolicyOutcome,
    TooManySlotsPolicy,
    UnknownPolicy,
    bounce,
    count_slots,
    fits,
    needs_bounce,
    policy_for,
    policy_names,
    relayout_plan,
)
from xennet.packet.frames import build_frame, frame_skb, parse_l3l4
from xennet.packet.skb import (
    ETH_HLEN,
    GSO_NONE,
    GSO_TCPV4,
    MAX_PACKET,
    MAX_SKB_FRAGS,
    HeapPages,
    Piece,
    Skb,
    build_skb,
    validate_layout,
)
from xennet.platform.base import PAGE_SIZE

SLOTS = 18
WORST = (Piece(4096 - 35, 70, 1),) + (Piece(4095, 4098, 2),) * 15 + (Piece(4095, 2, 1),) * 2
HDRS = 14 + 20 + 20  # Ethernet + IPv4 + TCP, no options
POLICIES = ["drop", "linearize", "segment", "relayout"]


@pytest.fixture
def pages() -> HeapPages:
    return HeapPages()


def tcp_skb(layout: tuple[Piece, ...], pages: HeapPages, seed: int = 0, gso: bool = True) -> Skb:
    total = sum(p.length for p in layout)
    payload = random.Random(seed).randbytes(total - HDRS)
    frame = build_frame(payload=payload, seq=1000, csum="partial")
    assert len(frame.data) == total
    return frame_skb(frame, pages, layout, gso_size=1448 if gso else 0)


def check_outcome(skb: Skb, data: bytes, out: PolicyOutcome, max_slots: int = SLOTS) -> None:
    """Whatever the policy, what it sends fits, says what it costs, and carries the packet."""
    assert skb.data() == data, "a policy must not modify its input"
    if out.dropped:
        assert out.skbs == [] and out.bytes_copied == 0 and out.reason
        return
    assert out.slots == [count_slots(s) for s in out.skbs]
    for s in out.skbs:
        assert fits(s, max_slots) and len(s.frags) <= MAX_SKB_FRAGS
        assert out.passed_through or not needs_bounce(s), "a policy's own output has the header first"
    if out.passed_through:
        assert out.skbs == [skb] and out.bytes_copied == 0
        return
    input_pages = {id(b.page) for b in skb.bufs}
    borrowed = any(id(b.page) in input_pages for s in out.skbs for b in s.bufs)
    assert (out.keepalive == [skb]) == borrowed, "keepalive must name the input iff outputs borrow it"
    if out.policy.startswith("segment") and not out.reason.startswith("not GSO"):
        check_segments(skb, data, out.skbs)
    else:
        assert len(out.skbs) == 1 and out.skbs[0].data() == data
        owned = sum(b.length for b in out.skbs[0].bufs if any(b.page is p for p in out.skbs[0].pages))
        assert out.bytes_copied == owned


def check_segments(skb: Skb, data: bytes, segs: list[Skb]) -> None:
    """A TCP stream cut into pieces: same headers, seq advancing, payload intact; a piece with
    more than the original MSS of payload is GSO again with the original MSS."""
    h = parse_l3l4(data)
    (seq0,) = struct.unpack_from("!I", data, h.l4_off + 4)
    payload = b""
    for s in segs:
        d = s.data()
        sh = parse_l3l4(d)
        assert sh.payload_off == h.payload_off and sh.frame_len == len(d)
        (seq,) = struct.unpack_from("!I", d, sh.l4_off + 4)
        assert seq == seq0 + len(payload)
        payload += d[sh.payload_off :]
        big = len(d) - sh.payload_off > skb.gso_size
        assert (s.gso_size, s.gso_type) == ((skb.gso_size, skb.gso_type) if big else (0, GSO_NONE))
    assert payload == data[h.payload_off :]


def release_all(out: PolicyOutcome, skb: Skb, pages: HeapPages) -> None:
    for s in out.skbs:
        if s is not skb:
            s.release(pages)
    skb.release(pages)


Row = tuple[str, int, list[int], int, int]  # policy, packets, slots per packet, bytes copied, drops


def summarize(name: str, outs: list[PolicyOutcome]) -> Row:
    return (
        name,
        sum(o.packets for o in outs),
        [s for o in outs for s in o.slots],
        sum(o.bytes_copied for o in outs),
        sum(o.dropped for o in outs),
    )


# --- the seed's worst case ------------------------------------------------------------------


def run_worst(name: str, pages: HeapPages) -> PolicyOutcome:
    skb = tcp_skb(WORST, pages)
    data = skb.data()
    assert count_slots(skb) == 51 and skb.len == 61544
    out = policy_for(name).apply(skb, SLOTS, pages)
    check_outcome(skb, data, out)
    release_all(out, skb, pages)
    assert pages.live == 0, "every page goes back"
    return out


def test_worst_case_drop(pages: HeapPages) -> None:
    out = run_worst("drop", pages)
    assert out.dropped and out.reason == "51 slots > 18"


def test_worst_case_linearize(pages: HeapPages) -> None:
    out = run_worst("linearize", pages)
    assert out.bytes_copied == 61544 and out.slots == [16]


def test_worst_case_segment(pages: HeapPages) -> None:
    out = run_worst("segment", pages)
    assert len(out.skbs) > 1 and all(s <= SLOTS for s in out.slots)
    assert 0 < out.bytes_copied < 4096  # headers (and the head's 16 payload bytes) only


def test_worst_case_relayout(pages: HeapPages) -> None:
    out = run_worst("relayout", pages)
    assert out.slots == [18]
    assert out.bytes_copied == 61544 - 2 * 4096  # keeps two 4 KiB frag middles in place
    assert out.bytes_copied < run_worst("linearize", pages).bytes_copied


# --- a seeded random mix --------------------------------------------------------------------


def random_layout(rng: random.Random) -> tuple[Piece, ...]:
    """1..18 buffers on compound pages (order 0..4) at misaligned offsets, at most 64 KiB."""
    n = rng.randint(1, 1 + MAX_SKB_FRAGS)
    budget = rng.randint(HDRS + n, MAX_PACKET)
    pieces: list[Piece] = []
    left = budget
    for i in range(n):
        order = rng.randint(0, 4)
        size = PAGE_SIZE << order
        cap = min(size, left - (n - i - 1))
        if i == 0:
            cap = max(cap, HDRS)  # room for the TCP/IP headers is checked below
        kind = rng.random()
        if kind < 0.3:
            length = rng.randint(1, min(cap, 64))
        elif kind < 0.7:
            length = rng.randint(1, min(cap, PAGE_SIZE + 2))
        else:
            length = rng.randint(1, cap)
        if i == 0:
            length = max(length, HDRS)
        edge = rng.random()
        if edge < 0.4:  # just before a 4 KiB boundary, as in the seed
            frame = rng.randrange(1 << order)
            offset = frame * PAGE_SIZE + PAGE_SIZE - rng.randint(1, 40)
        else:
            offset = rng.randint(0, size - 1)
        offset = max(0, min(offset, size - length))
        pieces.append(Piece(offset, length, order))
        left -= length
    layout = tuple(pieces)
    validate_layout(layout)
    return layout


def random_mix(seed: int = 2014, count: int = 200) -> Iterator[tuple[Piece, ...]]:
    rng = random.Random(seed)
    for _ in range(count):
        yield random_layout(rng)


def run_mix(name: str, pages: HeapPages) -> tuple[list[PolicyOutcome], int, float]:
    outs = []
    over = 0
    slowest = 0.0
    policy = policy_for(name)
    for i, layout in enumerate(random_mix()):
        skb = tcp_skb(layout, pages, seed=i)
        data = skb.data()
        if not fits(skb, SLOTS):
            over += 1
        t0 = time.perf_counter()
        out = policy.apply(skb, SLOTS, pages)
        slowest = max(slowest, time.perf_counter() - t0)
        check_outcome(skb, data, out)
        outs.append(out)
        release_all(out, skb, pages)
    assert pages.live == 0
    return outs, over, slowest


@pytest.mark.parametrize("name", POLICIES)
def test_random_mix(name: str, pages: HeapPages) -> None:
    outs, over, _ = run_mix(name, pages)
    assert over >= 50, "the mix must exercise the policy"
    if name != "drop":
        assert not any(o.dropped for o in outs)


def test_relayout_never_copies_more_than_linearize(pages: HeapPages) -> None:
    for layout in random_mix(seed=7, count=100):
        total = sum(p.length for p in layout)
        if sum(p.slots() for p in layout) > SLOTS:
            assert relayout_plan(layout, SLOTS).bytes_copied <= total


def test_report_tables(pages: HeapPages) -> None:
    lines = ["", "worst case (51 slots, 61544 bytes), max_slots 18:"]
    lines.append(f"{'policy':<10} {'packets':>7} {'bytes copied':>12}  slots per packet")
    for name in POLICIES:
        out = run_worst(name, pages)
        r = summarize(name, [out])
        lines.append(f"{name:<10} {r[1]:>7} {r[3]:>12}  {r[2] if r[2] else '(dropped)'}")
    mix = list(random_mix())
    total_bytes = sum(sum(p.length for p in lay) for lay in mix)
    n_over = sum(sum(p.slots() for p in lay) > SLOTS for lay in mix)
    lines.append(
        f"random mix: {len(mix)} TCP GSO packets, {total_bytes} bytes, {n_over} over 18 slots; "
        f"sums over all {len(mix)}:"
    )
    lines.append(
        f"{'policy':<10} {'packets':>7} {'slots':>7} {'bytes copied':>12} {'drops':>6} {'max ms':>7}"
    )
    for name in POLICIES:
        outs, _, slowest = run_mix(name, pages)
        r = summarize(name, outs)
        lines.append(f"{name:<10} {r[1]:>7} {sum(r[2]):>7} {r[3]:>12} {r[4]:>6} {slowest * 1000:>7.1f}")
    print("\n".join(lines))


# --- pass-through, names, fallbacks ------------------------------------------------------------


@pytest.mark.parametrize("name", policy_names())
def test_fitting_packet_passes_through(name: str, pages: HeapPages) -> None:
    skb = tcp_skb((Piece(100, 200, 0), Piece(4000, 1000, 1), Piece(0, 4096, 0)), pages)
    out = policy_for(name).apply(skb, SLOTS, pages)
    assert out.passed_through and out.skbs == [skb] and out.bytes_copied == 0
    assert out.slots == [count_slots(skb)] == [4] and not out.dropped and out.keepalive == []


def test_exactly_at_the_limit_passes_through(pages: HeapPages) -> None:
    layout = (Piece(0, 100, 0),) + (Piece(4095, 2, 1),) * 8 + (Piece(0, 10, 0),)  # 1 + 16 + 1
    skb = tcp_skb(layout, pages)
    assert count_slots(skb) == SLOTS
    for name in POLICIES:
        assert policy_for(name).apply(skb, SLOTS, pages).passed_through
    assert not policy_for("relayout").apply(skb, SLOTS - 1, pages).passed_through


def test_unknown_policy_name() -> None:
    with pytest.raises(UnknownPolicy, match=r"unknown too-many-slots policy 'shrink'.*relayout"):
        policy_for("shrink")
    assert policy_for(" Relayout ").name == "relayout"
    assert isinstance(UnknownPolicy("x"), ValueError)
    p: TooManySlotsPolicy = policy_for("segment+linearize")
    assert p.name == "segment+linearize"


def test_segment_refuses_non_gso(pages: HeapPages) -> None:
    skb = tcp_skb(WORST, pages, gso=False)
    data = skb.data()
    out = policy_for("segment").apply(skb, SLOTS, pages)
    assert out.dropped and out.reason.startswith("not GSO: drop:")
    out = policy_for("segment+linearize").apply(skb, SLOTS, pages)
    assert not out.dropped and out.reason.startswith("not GSO: linearize:")
    check_outcome(skb, data, out)
    out = policy_for("segment+relayout").apply(skb, SLOTS, pages)
    assert out.bytes_copied == 61544 - 2 * 4096
    check_outcome(skb, data, out)


def test_segment_falls_back_when_gso_lies(pages: HeapPages) -> None:
    """gso_type says TCP but the bytes are not a TCP frame: software GSO refuses."""
    skb = build_skb(bytes(range(256)) * 240 + bytes(104), WORST, pages)
    skb.gso_type, skb.gso_size = GSO_TCPV4, 1448
    out = policy_for("segment").apply(skb, SLOTS, pages)
    assert out.dropped and out.reason.startswith("cannot segment")


def test_relayout_drops_when_no_plan(pages: HeapPages) -> None:
    skb = tcp_skb((Piece(0, 65000, 4),), pages)  # 16 slots: fine for 18, impossible for 15
    out = policy_for("relayout").apply(skb, 15, pages)
    assert out.dropped and "no layout" in out.reason
    assert policy_for("linearize").apply(skb, 15, pages).dropped


def test_too_many_frags_is_over_the_limit(pages: HeapPages) -> None:
    """19 one-slot bufs would not fit the skb's frag array even with slots to spare."""
    data = random.Random(3).randbytes(100 + 18 * 10)
    skb = build_skb(data[:-10], (Piece(0, 100, 0),) + (Piece(0, 10, 0),) * 17, pages)
    extra = build_skb(data[-10:], (Piece(0, 10, 0),), pages)  # build_skb refuses an 18th frag
    skb.frags.append(extra.head)
    skb.pages += extra.pages
    assert count_slots(skb) == 19 and not fits(skb, 30)
    out = policy_for("relayout").apply(skb, 30, pages)
    check_outcome(skb, data, out, 30)
    assert len(out.skbs[0].frags) == MAX_SKB_FRAGS
    assert out.bytes_copied == 20  # two 10-byte frags merged into one fresh page
    assert "18 frags > 17" in out.reason
    assert policy_for("drop").apply(skb, 30, pages).reason == "18 frags > 17"


# --- relayout on real pages: every plan carries the exact bytes -------------------------------


@st.composite
def real_layout(draw: st.DrawFn) -> tuple[tuple[Piece, ...], int]:
    n = draw(st.integers(1, 1 + MAX_SKB_FRAGS))
    pieces: list[Piece] = []
    left = MAX_PACKET
    for i in range(n):
        order = draw(st.integers(0, 4))
        size = PAGE_SIZE << order
        cap = max(1, min(size, left - (n - i - 1)))
        length = draw(st.one_of(st.integers(1, min(cap, 40)), st.integers(1, cap)))
        offset = draw(st.one_of(st.integers(0, size - length), st.just(max(0, PAGE_SIZE - 3 - (length > 8)))))
        offset = min(offset, size - length)
        pieces.append(Piece(offset, length, order))
        left -= length
    return tuple(pieces), draw(st.integers(16, 24))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(real_layout(), st.randoms(use_true_random=False))
def test_relayout_reconstructs_exact_bytes(case: tuple[tuple[Piece, ...], int], rnd: random.Random) -> None:
    layout, max_slots = case
    pages = HeapPages()
    data = rnd.randbytes(sum(p.length for p in layout))
    skb = build_skb(data, layout, pages)
    out = policy_for("relayout").apply(skb, max_slots, pages)
    check_outcome(skb, data, out, max_slots)
    assert not out.dropped  # 64 KiB fits in 16 fresh pages, so there is always a plan
    if not out.passed_through:
        res = out.skbs[0]
        src_pages = {id(b.page) for b in skb.bufs}
        kept = [b for b in res.bufs if id(b.page) in src_pages]
        assert sum(b.length for b in kept) == len(data) - out.bytes_copied
        lin = policy_for("linearize").apply(skb, max_slots, pages)
        assert out.bytes_copied <= lin.bytes_copied
        release_all(lin, skb, pages)
        skb.users += 1
    release_all(out, skb, pages)
    assert pages.live == 0


# --- slot accounting and the header bounce -------------------------------------------------


def test_count_slots_matches_the_seed() -> None:
    pages = HeapPages()
    skb = build_skb(bytes(61544), WORST, pages)
    assert count_slots(skb) == 51
    assert [b.slots() for b in skb.bufs] == [2] + [3] * 15 + [2, 2]


@pytest.mark.parametrize("off", range(4096 - 20, 4096))
def test_needs_bounce_is_the_linux_rule_for_real_heads(off: int) -> None:
    """For heads of at least ETH_HLEN bytes: bounce iff PAGE_SIZE - offset < ETH_HLEN."""
    pages = HeapPages()
    skb = build_skb(bytes(200), (Piece(off, 100, 1), Piece(0, 100, 0)), pages)
    assert needs_bounce(skb) == (PAGE_SIZE - off % PAGE_SIZE < ETH_HLEN)


def test_bounce_copies_the_head_and_keeps_frags(pages: HeapPages) -> None:
    data = random.Random(1).randbytes(70 + 300)
    skb = build_skb(data, (Piece(4096 - 10, 70, 1), Piece(5, 300, 0)), pages)
    assert needs_bounce(skb)
    new, copied = bounce(skb, pages)
    assert copied == 70 and new.data() == data and not needs_bounce(new)
    assert new.head.offset == 0 and new.frags == skb.frags
    assert count_slots(new) <= count_slots(skb)
    new.release(pages)
    skb.release(pages)
    assert pages.live == 0


def test_bounce_pulls_header_bytes_into_a_short_head(pages: HeapPages) -> None:
    data = bytes(range(60))
    skb = build_skb(data, (Piece(4090, 6, 0), Piece(10, 5, 0), Piece(0, 49, 0)), pages)
    assert needs_bounce(skb)
    new, copied = bounce(skb, pages)
    assert copied == ETH_HLEN and new.head.length == ETH_HLEN and new.data() == data
    assert len(new.frags) == 1 and new.frags[0].length == 46  # the 5-byte frag is gone, 3 pulled
    assert not needs_bounce(new)


def test_no_bounce_needed(pages: HeapPages) -> None:
    whole = build_skb(bytes(10), (Piece(4086, 10, 0),), pages)  # the packet is shorter than 14
    assert not needs_bounce(whole) and bounce(whole, pages) == (whole, 0)
    at14 = build_skb(bytes(100), (Piece(4096 - 14, 100, 1),), pages)
    assert not needs_bounce(at14)
