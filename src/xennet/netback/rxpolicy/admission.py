"""Admission policies: when may a packet for the guest be queued, and when put on the rx ring?

The caller owns the ring.  It passes ``available``: rx requests the guest has posted that are
not consumed yet (``req_prod - req_cons``).  The protocol for the rx path::

    q = policy.on_queue(layout, gso, available)      # the packet arrives for this vif
    if not q.go: hold it (stop the queue); retry when the guest posts requests
    ...
    a = policy.admit(layout, gso, available)          # at the front of the queue, to send
    if not a.go: re-arm req_event, final-check, retry when the guest posts requests
    else: consume a.plan.slots requests, copy by a.plan, then policy.on_done(q)

``estimate``     Seed 004's way: the packing policy's slot estimate is reserved when the packet
                 is queued (``rx_req_cons_peek``), and a packet is queued only while
                 ``reserved + estimate <= available``; ``on_done`` releases it.  Sending needs
                 no check if the estimate is right (``trust_reservation``: what Linux did); by
                 default it is checked anyway, and a plan that outgrows its estimate waits
                 (counted in ``late_refusals``) instead of overrunning the ring.
``fit-or-wait``  Seed 002's "get rid of the estimation": nothing is reserved.  At send time a
                 cheap necessary condition (``ceil(len / 4096)`` buffers + the GSO extra),
                 then the real plan; if it needs more requests than are posted, wait with the
                 ring's event re-armed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ...packet.skb import Piece
from .packing import PackingPolicy
from .plan import RX_BUFFER_SIZE, PlanError, RxPlan, packet_length

Estimator = Callable[[Sequence[Piece], bool], int]


@dataclass(frozen=True)
class Admission:
    go: bool
    needed: int  # requests the packet needs (on a refusal: at least this many)
    plan: RxPlan | None = None  # the plan to copy by, when one was built
    rearm: bool = False  # refused for lack of requests: re-arm the event, final-check, retry


class AdmissionPolicy(Protocol):
    name: str
    packing: PackingPolicy
    reserves: bool  # slots are reserved when a packet is queued (reserve/release)
    late_refusals: int

    @property
    def reserved(self) -> int:
        """Requests promised to queued packets and not yet consumed."""
        ...

    def on_queue(self, layout: Sequence[Piece], gso: bool, available: int) -> Admission:
        """May the packet join the rx queue now?  Keep the answer for ``on_done``."""
        ...

    def admit(self, layout: Sequence[Piece], gso: bool, available: int) -> Admission:
        """May the packet at the front of the queue go on the ring now?  ``plan`` says how."""
        ...

    def on_done(self, queued: Admission) -> None:
        """The packet ``on_queue`` let in has left the queue (sent or dropped)."""
        ...

    def reserve(self, slots: int, available: int) -> bool:
        """The queue's form of ``on_queue``: take ``slots`` of ``available`` posted requests."""
        ...

    def release(self, slots: int) -> None:
        """The queue's form of ``on_done``."""
        ...


class EstimateAdmission:
    name = "estimate"
    reserves = True

    def __init__(
        self,
        packing: PackingPolicy,
        estimator: Estimator | None = None,
        *,
        trust_reservation: bool = False,
    ) -> None:
        self.packing = packing
        self.estimator: Estimator = estimator or packing.estimate
        self.trust_reservation = trust_reservation
        self._reserved = 0
        self.late_refusals = 0  # plans larger than their estimate (an estimator bug)

    @property
    def reserved(self) -> int:
        return self._reserved

    def on_queue(self, layout: Sequence[Piece], gso: bool, available: int) -> Admission:
        est = self.estimator(layout, gso)
        if self._reserved + est > available:
            return Admission(False, est, rearm=True)
        self._reserved += est
        return Admission(True, est)

    def admit(self, layout: Sequence[Piece], gso: bool, available: int) -> Admission:
        plan = self.packing.plan(layout, gso)
        if plan.slots > available and not self.trust_reservation:
            self.late_refusals += 1
            return Admission(False, plan.slots, plan, rearm=True)
        return Admission(True, plan.slots, plan)

    def on_done(self, queued: Admission) -> None:
        if not queued.go:
            raise ValueError("on_done for a packet on_queue refused")
        self.release(queued.needed)

    def reserve(self, slots: int, available: int) -> bool:
        if self._reserved + slots > available:
            return False
        self._reserved += slots
        return True

    def release(self, slots: int) -> None:
        if slots > self._reserved:
            raise ValueError(f"releasing {slots} requests, only {self._reserved} reserved")
        self._reserved -= slots


class FitOrWaitAdmission:
    name = "fit-or-wait"
    reserves = False

    def __init__(self, packing: PackingPolicy) -> None:
        self.packing = packing
        self.late_refusals = 0  # never: nothing is promised ahead
        self.quick_refusals = 0  # refused by the cheap bound, no plan built
        self.plan_refusals = 0  # the bound passed, the plan did not fit

    @property
    def reserved(self) -> int:
        return 0

    def on_queue(self, layout: Sequence[Piece], gso: bool, available: int) -> Admission:
        return Admission(True, 0)  # nothing reserved; the queue is bounded in bytes elsewhere

    def admit(self, layout: Sequence[Piece], gso: bool, available: int) -> Admission:
        total = packet_length(layout)
        if total <= 0:
            raise PlanError("an empty packet cannot be received: the first buffer must hold data")
        least = -(-total // RX_BUFFER_SIZE) + (1 if gso else 0)  # no packing can do with fewer
        if available < least:
            self.quick_refusals += 1
            return Admission(False, least, rearm=True)
        plan = self.packing.plan(layout, gso)
        if plan.slots > available:
            self.plan_refusals += 1
            return Admission(False, plan.slots, plan, rearm=True)
        return Admission(True, plan.slots, plan)

    def on_done(self, queued: Admission) -> None:
        return None

    def reserve(self, slots: int, available: int) -> bool:
        return True

    def release(self, slots: int) -> None:
        return None


ADMISSION_POLICIES: dict[str, Callable[[PackingPolicy], AdmissionPolicy]] = {
    EstimateAdmission.name: EstimateAdmission,
    FitOrWaitAdmission.name: FitOrWaitAdmission,
}


def admission_policy(name: str, packing: PackingPolicy) -> AdmissionPolicy:
    try:
        factory = ADMISSION_POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(ADMISSION_POLICIES))
        raise ValueError(f"unknown rx admission policy {name!r}: choose one of {known}") from None
    return factory(packing)
