"""Unit and property tests of xennet.ring (FrontRing / BackRing) against a tiny reference model.

The model keeps every index as an unbounded integer and states ring.h's rules
directly ("notify when the peer's event index lies in (old, new]", "the final
check re-arms the event at cons + 1"); the ring works on u32 indices in a page.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from xennet.abi import netif
from xennet.abi.ring import PAGE_SIZE, REQ_EVENT, REQ_PROD, RING_OFFSET, RSP_EVENT, RSP_PROD
from xennet.ring import BackRing, FrontRing, RingOverflow

M32 = 0xFFFFFFFF
N = 256  # tx and rx rings on one page
TX_SLOT = 12
u32s = st.integers(0, M32)
# start indices: 0 (FRONT_RING_INIT), just below the u32 wrap, anywhere
starts = st.one_of(st.sampled_from([0, 1, M32, 2**32 - N, 2**32 - 3 * N - 7, 2**31]), u32s)

Front = FrontRing[netif.TxRequest, netif.TxResponse]
Back = BackRing[netif.TxRequest, netif.TxResponse]


def header(page: memoryview) -> tuple[int, ...]:
    """(req_prod, req_event, rsp_prod, rsp_event) as on the page."""
    return tuple(struct.unpack_from("<I", page, off)[0] for off in (REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT))


def poke(page: memoryview, off: int, value: int) -> None:
    struct.pack_into("<I", page, off, value & M32)


def tx_pair(start: int = 0, fill: int = 0xA5) -> tuple[memoryview, Front, Back]:
    """A front and a back on one page; with ``start`` they attach there (FRONT/BACK_RING_ATTACH)."""
    page = memoryview(bytearray([fill]) * PAGE_SIZE)
    front: Front = FrontRing(page, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse)
    back: Back = BackRing(page, netif.TX_REQUEST, netif.TX_RESPONSE, netif.TxRequest, netif.TxResponse)
    if start:
        for off, value in [
            (REQ_PROD, start),
            (RSP_PROD, start),
            (REQ_EVENT, start + 1),
            (RSP_EVENT, start + 1),
        ]:
            poke(page, off, value)
        front.req_prod_pvt = front.rsp_cons = start & M32
        back.rsp_prod_pvt = back.req_cons = start & M32
    return page, front, back


def req(seq: int) -> netif.TxRequest:
    return netif.TxRequest(
        gref=(seq * 7919) & M32,
        offset=seq & 0xFFF,
        flags=seq & 0xF,
        id=seq & 0xFFFF,
        size=(seq * 31) & 0xFFFF,
    )


def rsp(seq: int) -> netif.TxResponse:
    return netif.TxResponse(id=seq & 0xFFFF, status=(seq % 4) - 2)


# --- geometry and initialisation -------------------------------------------------


def test_ring_sizes() -> None:
    page = memoryview(bytearray(PAGE_SIZE))
    assert FrontRing(page, netif.TX_REQUEST, netif.TX_RESPONSE).nr_ents == 256
    assert FrontRing(page, netif.RX_REQUEST, netif.RX_RESPONSE).nr_ents == 256
    assert FrontRing(page, netif.CTRL_REQUEST, netif.CTRL_RESPONSE).nr_ents == 128
    with pytest.raises(ValueError):
        FrontRing(memoryview(bytearray(PAGE_SIZE - 1)), netif.TX_REQUEST, netif.TX_RESPONSE)


def test_front_init_writes_the_header_only() -> None:
    page, _front, _back = tx_pair(fill=0xA5)
    assert header(page) == (0, 1, 0, 1)  # SHARED_RING_INIT
    assert bytes(page[16:RING_OFFSET]) == bytes(RING_OFFSET - 16)  # pvt and __pad zeroed
    assert bytes(page[RING_OFFSET:]) == b"\xa5" * (PAGE_SIZE - RING_OFFSET)  # entries untouched
    junk = memoryview(bytearray(b"\x5a") * PAGE_SIZE)
    FrontRing(junk, netif.TX_REQUEST, netif.TX_RESPONSE, init=False)
    assert bytes(junk) == b"\x5a" * PAGE_SIZE  # attaching does not touch the page


def test_requests_land_in_their_slots() -> None:
    page, front, _back = tx_pair()
    for seq in range(3):
        assert front.put_request(*req(seq)) == seq
    for seq in range(3):
        off = RING_OFFSET + seq * TX_SLOT
        assert bytes(page[off : off + TX_SLOT]) == struct.pack("<IHHHH", *req(seq))
    assert header(page)[0] == 0  # not visible until pushed


# --- free count and full -------------------------------------------------------------


def test_free_count_and_full() -> None:
    _page, front, back = tx_pair()
    assert front.free_requests() == N and not front.full()
    for seq in range(N):
        front.put_request(*req(seq))
        assert front.free_requests() == N - seq - 1  # private requests count too
    assert front.full()
    with pytest.raises(RuntimeError):
        front.put_request(*req(N))
    front.push_requests()
    assert back.unconsumed_requests() == N
    for seq in range(5):
        assert back.get_request() == req(seq)
        back.put_response(*rsp(seq))
    back.push_responses()
    assert front.full()  # slots come back only when the front consumes responses
    front.get_response()
    front.get_response()
    assert front.free_requests() == 2


# --- notify decisions and final checks ---------------------------------------------------


def test_notify_decisions() -> None:
    page, front, back = tx_pair()
    front.put_request(*req(0))
    assert front.push_requests() is True  # req_event = 1 is in (0, 1]
    front.put_request(*req(1))
    assert front.push_requests() is False  # the back has not asked again
    assert front.push_requests() is False  # nothing new
    assert back.final_check_for_requests() is True  # work pending: event left alone
    assert header(page)[1] == 1
    back.get_request()
    back.get_request()
    assert back.final_check_for_requests() is False  # idle: re-armed at req_cons + 1
    assert header(page)[1] == 3
    front.put_request(*req(2))
    front.put_request(*req(3))
    assert front.push_requests() is True
    back.put_response(*rsp(0))
    assert back.push_responses() is True  # rsp_event = 1
    back.put_response(*rsp(1))
    assert back.push_responses() is False


def test_final_check_rearms_so_no_wakeup_is_lost() -> None:
    page, front, back = tx_pair()
    for seq in range(3):
        front.put_request(*req(seq))
    front.push_requests()
    for seq in range(3):
        back.get_request()
        back.put_response(*rsp(seq))
    back.push_responses()
    assert front.final_check_for_responses() is True
    assert header(page)[3] == 1  # untouched while work is pending
    for _ in range(3):
        front.get_response()
    assert front.final_check_for_responses() is False  # now safe to sleep...
    assert header(page)[3] == 4
    front.put_request(*req(3))
    front.push_requests()
    back.get_request()
    back.put_response(*rsp(3))
    assert back.push_responses() is True  # ...because the next response notifies


def test_batching_consumer_event() -> None:
    # A consumer may set its event further ahead (old netfront did) to batch wake-ups.
    page, front, back = tx_pair()
    poke(page, REQ_EVENT, 5)
    for seq in range(4):
        front.put_request(*req(seq))
        assert front.push_requests() is False
    front.put_request(*req(4))
    assert front.push_requests() is True
    assert back.unconsumed_requests() == 5


# --- overflow: a peer claiming too much (XSA-39) ---------------------------------------------


@given(start=starts, claim=st.one_of(st.integers(N - 2, N + 2), u32s))
def test_check_overflow(start: int, claim: int) -> None:
    page, _front, back = tx_pair(start)
    poke(page, REQ_PROD, start + claim)
    if claim <= N:
        assert back.check_overflow() == claim
    else:
        with pytest.raises(RingOverflow):
            back.check_overflow()


def test_req_prod_far_ahead_is_refused() -> None:
    page, front, back = tx_pair(2**32 - 10)
    for seq in range(20):
        front.put_request(*req(seq))
    front.push_requests()
    for _ in range(20):
        back.get_request()
    assert back.check_overflow() == 0
    poke(page, REQ_PROD, back.req_cons + 0x80000000)
    with pytest.raises(RingOverflow):
        back.check_overflow()
    poke(page, REQ_PROD, back.req_cons + N)  # a full ring is fine, one more is not
    assert back.check_overflow() == N
    poke(page, REQ_PROD, back.req_cons + N + 1)
    with pytest.raises(RingOverflow):
        back.check_overflow()


def test_unconsumed_requests_bounded_by_response_space() -> None:
    # RING_HAS_UNCONSUMED_REQUESTS: never more than the slots not awaiting a response.
    page, front, back = tx_pair()
    for seq in range(10):
        front.put_request(*req(seq))
    front.push_requests()
    for _ in range(10):
        back.get_request()
    poke(page, REQ_PROD, back.req_cons + 300)  # a lying frontend
    assert back.unconsumed_requests() == N - 10
    back.req_cons = (back.req_cons + N - 10) & M32
    assert back.unconsumed_requests() == 0
    assert back.request_cons_overflow()


def test_response_overflow() -> None:
    page, front, _back = tx_pair()
    for seq in range(3):
        front.put_request(*req(seq))
    front.push_requests()
    poke(page, RSP_PROD, 3)
    assert not front.response_overflow()
    poke(page, RSP_PROD, 4)
    assert front.response_overflow()


# --- copy-once -----------------------------------------------------------------------------


@given(evil=st.binary(min_size=TX_SLOT, max_size=TX_SLOT))
def test_get_request_copies_once(evil: bytes) -> None:
    page, front, back = tx_pair()
    front.put_request(*req(42))
    front.push_requests()
    got = back.get_request()
    page[RING_OFFSET : RING_OFFSET + TX_SLOT] = evil  # the frontend rewrites the slot afterwards
    assert got == req(42)
    assert netif.TxRequest._make(netif.TX_REQUEST.unpack_from(page, RING_OFFSET)) == netif.TxRequest._make(
        struct.unpack("<IHHHH", evil)
    )


def test_get_request_bytes_copies_once() -> None:
    page, front, back = tx_pair()
    front.put_request(*req(7))
    front.push_requests()
    raw = back.get_request_bytes(TX_SLOT)
    page[RING_OFFSET : RING_OFFSET + TX_SLOT] = b"\xff" * TX_SLOT
    assert raw == struct.pack("<IHHHH", *req(7))


# --- wrap-around -------------------------------------------------------------------------------


def test_u32_wraparound() -> None:
    start = 2**32 - 3
    page, front, back = tx_pair(start)
    for seq in range(10):
        assert front.put_request(*req(seq)) == (start + seq) & M32
    assert front.req_prod_pvt == 7
    assert front.push_requests() is True  # req_event start + 1 lies in (start, 7] across the wrap
    assert header(page)[0] == 7
    for seq in range(10):
        slot = ((start + seq) & (N - 1)) * TX_SLOT + RING_OFFSET
        assert netif.TX_REQUEST.unpack_from(page, slot) == tuple(req(seq))
    assert back.unconsumed_requests() == 10
    assert [back.get_request() for _ in range(10)] == [req(s) for s in range(10)]
    assert back.final_check_for_requests() is False
    assert header(page)[1] == 8


@given(old=u32s, produced=st.integers(0, N), event=u32s)
def test_notify_rule(old: int, produced: int, event: int) -> None:
    # Notify exactly when the event index is one of the indices just published: old+1 .. old+produced.
    page, front, _back = tx_pair()
    poke(page, REQ_PROD, old)
    poke(page, REQ_EVENT, event)
    front.req_prod_pvt = (old + produced) & M32
    published = {(old + i) & M32 for i in range(1, produced + 1)}
    assert front.push_requests() is (event in published)


# --- stateful: random operation sequences against the reference model ------------------------------


class Model:
    """ring.h in unbounded integers: no masks, no wrap."""

    def __init__(self, start: int) -> None:
        self.req_prod_pvt = self.req_prod = self.req_cons = start
        self.rsp_prod_pvt = self.rsp_prod = self.rsp_cons = start
        self.req_event = self.rsp_event = start + 1
        self.start = start

    def unconsumed_requests(self) -> int:
        return min(self.req_prod - self.req_cons, N - (self.req_cons - self.rsp_prod_pvt))


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.page: memoryview
        self.front: FrontRing[Any, Any]
        self.back: BackRing[Any, Any]
        self.m: Model

    @initialize(start=starts)
    def setup(self, start: int) -> None:
        self.page, self.front, self.back = tx_pair(start)
        self.m = Model(start)

    @rule(k=st.integers(1, N + 4))
    def produce(self, k: int) -> None:
        m = self.m
        n = min(k, N - (m.req_prod_pvt - m.rsp_cons))
        for _ in range(n):
            self.front.put_request(*req(m.req_prod_pvt - m.start))
            m.req_prod_pvt += 1
        assert self.front.full() is (m.req_prod_pvt - m.rsp_cons == N)
        if n < k:
            with pytest.raises(RuntimeError):
                self.front.put_request(*req(0))

    @rule()
    def push_requests(self) -> None:
        m = self.m
        old, m.req_prod = m.req_prod, m.req_prod_pvt
        assert self.front.push_requests() is (old < m.req_event <= m.req_prod)

    @rule(k=st.integers(1, N + 4))
    def consume_requests(self, k: int) -> None:
        m = self.m
        assert self.back.check_overflow() == m.req_prod - m.req_cons
        n = min(k, m.unconsumed_requests())
        for _ in range(n):
            assert self.back.get_request() == req(m.req_cons - m.start)
            m.req_cons += 1

    @rule(k=st.integers(1, N + 4))
    def respond(self, k: int) -> None:
        m = self.m
        for _ in range(min(k, m.req_cons - m.rsp_prod_pvt)):
            self.back.put_response(*rsp(m.rsp_prod_pvt - m.start))
            m.rsp_prod_pvt += 1

    @rule()
    def push_responses(self) -> None:
        m = self.m
        old, m.rsp_prod = m.rsp_prod, m.rsp_prod_pvt
        assert self.back.push_responses() is (old < m.rsp_event <= m.rsp_prod)

    @rule(k=st.integers(1, N + 4))
    def consume_responses(self, k: int) -> None:
        m = self.m
        assert not self.front.response_overflow()
        for _ in range(min(k, m.rsp_prod - m.rsp_cons)):
            assert self.front.get_response() == rsp(m.rsp_cons - m.start)
            m.rsp_cons += 1

    @rule()
    def front_final_check(self) -> None:
        m = self.m
        pending = m.rsp_prod > m.rsp_cons
        if not pending:
            m.rsp_event = m.rsp_cons + 1
        assert self.front.final_check_for_responses() is pending

    @rule()
    def back_final_check(self) -> None:
        m = self.m
        pending = m.unconsumed_requests() > 0
        if not pending:
            m.req_event = m.req_cons + 1
        assert self.back.final_check_for_requests() is pending

    @rule(ahead=st.integers(0, N + 4), back_end=st.booleans())
    def batching_event(self, ahead: int, back_end: bool) -> None:
        m = self.m
        if back_end:
            m.req_event = m.req_cons + ahead
            poke(self.page, REQ_EVENT, m.req_event)
        else:
            m.rsp_event = m.rsp_cons + ahead
            poke(self.page, RSP_EVENT, m.rsp_event)

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "m"):
            return
        m = self.m
        assert header(self.page) == tuple(v & M32 for v in (m.req_prod, m.req_event, m.rsp_prod, m.rsp_event))
        assert self.front.req_prod_pvt == m.req_prod_pvt & M32
        assert self.front.rsp_cons == m.rsp_cons & M32
        assert self.back.req_cons == m.req_cons & M32
        assert self.back.rsp_prod_pvt == m.rsp_prod_pvt & M32
        assert self.front.free_requests() == N - (m.req_prod_pvt - m.rsp_cons)
        assert self.front.unconsumed_responses() == m.rsp_prod - m.rsp_cons
        assert self.back.unconsumed_requests() == m.unconsumed_requests()


RingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=80, deadline=None)
test_ring_machine = RingMachine.TestCase
