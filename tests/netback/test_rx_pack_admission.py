"""Admission policies against a simulated rx ring: a counter of requests the guest posted."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from rxpack_strategies import layouts

from xennet.netback.rxpolicy import (
    ADMISSION_POLICIES,
    PACKING_POLICIES,
    Admission,
    AdmissionPolicy,
    EstimateAdmission,
    FitOrWaitAdmission,
    SeedPacking,
    admission_policy,
    packing_policy,
    seed_original_count,
)
from xennet.packet.skb import Layout, Piece

RING = 256  # rx ring entries: the guest never has more requests outstanding


class Overrun(AssertionError):
    pass


class SimRxRing:
    """Only what admission needs: requests posted (req_prod) and consumed (req_cons)."""

    def __init__(self) -> None:
        self.posted = 0
        self.consumed = 0

    @property
    def available(self) -> int:
        return self.posted - self.consumed

    def post(self, n: int) -> None:
        self.posted += max(0, min(n, RING - self.available))

    def consume(self, n: int) -> None:
        if n > self.available:
            raise Overrun(f"consuming {n} requests, the guest posted {self.available}")
        self.consumed += n


Packet = tuple[Layout, bool]


def run(policy: AdmissionPolicy, packets: Sequence[Packet], posts: Sequence[int], refill: int = 16) -> int:
    """Drive the rx path until every packet is delivered; returns the steps it took.  The
    guest posts ``posts[i]`` requests at step i, then ``refill`` a step (it keeps reading)."""
    ring = SimRxRing()
    backlog: deque[Packet] = deque(packets)  # waiting for the queue (netdev queue stopped)
    queue: deque[tuple[Packet, Admission]] = deque()
    used = 0
    limit = len(posts) + 20 * (len(packets) + 1)
    for step in range(limit):
        ring.post(posts[step] if step < len(posts) else refill)
        while backlog:
            q = policy.on_queue(*backlog[0], ring.available)
            if not q.go:
                assert q.rearm
                break
            queue.append((backlog.popleft(), q))
        while queue:
            (layout, gso), q = queue[0]
            a = policy.admit(layout, gso, ring.available)
            if not a.go:
                assert a.rearm and a.needed > ring.available  # wait only for lack of requests
                break
            assert a.plan is not None and a.needed == a.plan.slots
            ring.consume(a.plan.slots)  # raises Overrun
            used += a.plan.slots
            policy.on_done(q)
            queue.popleft()
        assert 0 <= policy.reserved <= ring.available
        if not backlog and not queue:
            assert policy.reserved == 0
            assert ring.consumed == used == sum(policy.packing.plan(lay, g).slots for lay, g in packets)
            return step
    raise AssertionError(f"deadlock: {len(backlog)} + {len(queue)} packets still waiting after {limit} steps")


packets = st.lists(st.tuples(layouts(), st.booleans()), min_size=1, max_size=12)
posts = st.lists(st.integers(0, 64), max_size=40)
# Shrinking whole streams costs minutes; a packing bug is shrunk by the packing checker, and a
# failing stream here is reported as found.
STREAMS = settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.mark.parametrize("packing", sorted(PACKING_POLICIES))
@STREAMS
@given(stream=packets, schedule=posts)
def test_estimate_never_overruns_never_deadlocks(
    packing: str, stream: list[Packet], schedule: list[int]
) -> None:
    policy = EstimateAdmission(packing_policy(packing))
    run(policy, stream, schedule)
    assert policy.late_refusals == 0  # the reservation always covered the real plan


@pytest.mark.parametrize("packing", sorted(PACKING_POLICIES))
@STREAMS
@given(stream=packets, schedule=posts)
def test_fit_or_wait_never_overruns_never_deadlocks(
    packing: str, stream: list[Packet], schedule: list[int]
) -> None:
    run(FitOrWaitAdmission(packing_policy(packing)), stream, schedule)


UNDER: Packet = ((Piece(0, 1, 0), Piece(0, 4097, 1)), False)  # seed estimate 2, copy uses 3


def test_estimate_reserves_and_releases() -> None:
    policy = EstimateAdmission(SeedPacking())
    small = (Piece(0, 100, 0),)
    q1 = policy.on_queue(small, True, 3)
    assert (q1.go, q1.needed, policy.reserved) == (True, 2, 2)
    q2 = policy.on_queue(small, False, 3)
    assert (q2.go, policy.reserved) == (True, 3)
    q3 = policy.on_queue(small, False, 3)  # 3 + 1 > 3: not queued, wait for the guest
    assert (q3.go, q3.rearm, policy.reserved) == (False, True, 3)
    policy.on_done(q1)
    assert policy.reserved == 1
    with pytest.raises(ValueError):
        policy.on_done(q3)


def test_seed_original_estimate_overruns_the_ring() -> None:
    """The danger of an under-count: Linux trusted its reservation and consumed requests the
    guest never posted.  With seed 004's original count, the packet needing 3 gets in on 2."""
    ring = SimRxRing()
    ring.post(2)
    trusting = EstimateAdmission(SeedPacking(), seed_original_count, trust_reservation=True)
    q = trusting.on_queue(*UNDER, ring.available)
    assert q.go and q.needed == 2
    a = trusting.admit(*UNDER, ring.available)
    assert a.go and a.plan is not None and a.plan.slots == 3
    with pytest.raises(Overrun):
        ring.consume(a.plan.slots)
    # checked (the default): the plan is refused at send time, and goes once the guest posts
    checked = EstimateAdmission(SeedPacking(), seed_original_count)
    q = checked.on_queue(*UNDER, ring.available)
    a = checked.admit(*UNDER, ring.available)
    assert (a.go, a.needed, a.rearm, checked.late_refusals) == (False, 3, True, 1)
    ring.post(1)
    a = checked.admit(*UNDER, ring.available)
    assert a.go and a.plan is not None
    ring.consume(a.plan.slots)
    checked.on_done(q)
    assert checked.reserved == 0


def test_seed_original_estimate_overruns_in_a_stream() -> None:
    policy = EstimateAdmission(SeedPacking(), seed_original_count, trust_reservation=True)
    with pytest.raises(Overrun):
        run(policy, [UNDER] * 4, [2, 0, 0])


def test_fit_or_wait_waits_then_sends() -> None:
    policy = FitOrWaitAdmission(SeedPacking())
    ring = SimRxRing()
    ring.post(1)
    a = policy.admit(*UNDER, ring.available)  # ceil(4098 / 4096) = 2 > 1: no plan built
    assert (a.go, a.needed, a.rearm, a.plan, policy.quick_refusals) == (False, 2, True, None, 1)
    ring.post(1)
    a = policy.admit(*UNDER, ring.available)  # the bound passes, the plan (3) does not fit
    assert (a.go, a.needed, a.rearm, policy.plan_refusals) == (False, 3, True, 1)
    assert a.plan is not None and a.plan.slots == 3
    ring.post(1)
    a = policy.admit(*UNDER, ring.available)
    assert a.go and a.needed == 3 and a.plan is not None
    ring.consume(a.plan.slots)
    # the GSO extra counts in the cheap bound too
    gso_packet = ((Piece(0, 100, 0),), True)
    assert policy.admit(*gso_packet, 1) == Admission(False, 2, None, True)
    assert policy.admit(*gso_packet, 2).go


def test_fit_or_wait_reserves_nothing() -> None:
    policy = FitOrWaitAdmission(SeedPacking())
    q = policy.on_queue(*UNDER, 0)
    assert q.go and policy.reserved == 0
    policy.on_done(q)


def test_registry() -> None:
    for name in ADMISSION_POLICIES:
        p = admission_policy(name, packing_policy("full"))
        assert p.name == name and p.packing.name == "full"
    with pytest.raises(ValueError, match="estimate, fit-or-wait"):
        admission_policy("optimistic", SeedPacking())
