"""The shared ring: indices, event thresholds, notify decisions and copy-once reads."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar, cast

from ..abi.ring import PAGE_SIZE, REQ_EVENT, REQ_PROD, RING_OFFSET, RSP_EVENT, RSP_PROD, const_ring_size
from .barrier import full_barrier

_MASK = 0xFFFFFFFF


Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


class RingOverflow(Exception):
    """The peer's producer index claims more entries than the ring holds (XSA-39)."""


class _Ring(Generic[Req, Rsp]):
    def __init__(
        self,
        page: memoryview,
        req: struct.Struct,
        rsp: struct.Struct,
        req_type: type[Req] | None = None,
        rsp_type: type[Rsp] | None = None,
        size: int = PAGE_SIZE,
    ) -> None:
        if len(page) < size:
            raise ValueError(f"ring buffer is {len(page)} bytes, need {size}")
        self.page = page
        # The four indices are read by the other end while we write them, so each must be one
        # aligned 32-bit load or store.  struct.pack_into zero-fills then writes byte by byte
        # (a peer can see 0 or half a value); a native 'I' memoryview moves the word at once.
        self._idx = page[:RING_OFFSET].cast("I")
        self.req = req
        self.rsp = rsp
        self.entry_size = max(req.size, rsp.size)
        self.nr_ents = const_ring_size(self.entry_size, size)
        self._mask = self.nr_ents - 1
        # Values are unpacked straight into these types (NamedTuples: their _make), or left
        # as tuples.
        self._req_make = cast(Callable[[Iterable[int]], Req], getattr(req_type, "_make", tuple))
        self._rsp_make = cast(Callable[[Iterable[int]], Rsp], getattr(rsp_type, "_make", tuple))

    def _get(self, off: int) -> int:
        return self._idx[off >> 2]  # type: ignore[no-any-return]

    def _set(self, off: int, value: int) -> None:
        self._idx[off >> 2] = value & _MASK

    def _slot(self, idx: int) -> int:
        return RING_OFFSET + (idx & self._mask) * self.entry_size

    # shared indices, read fresh from the page every time
    @property
    def req_prod(self) -> int:
        return self._get(REQ_PROD)

    @property
    def rsp_prod(self) -> int:
        return self._get(RSP_PROD)

    @property
    def req_event(self) -> int:
        return self._get(REQ_EVENT)

    @property
    def rsp_event(self) -> int:
        return self._get(RSP_EVENT)


def _notify(new: int, old: int, event: int) -> bool:
    # RING_PUSH_*_AND_CHECK_NOTIFY: did the peer's event index fall inside (old, new]?
    return ((new - event) & _MASK) < ((new - old) & _MASK)


class FrontRing(_Ring[Req, Rsp]):
    """The front end: produces requests, consumes responses."""

    def __init__(
        self,
        page: memoryview,
        req: struct.Struct,
        rsp: struct.Struct,
        req_type: type[Req] | None = None,
        rsp_type: type[Rsp] | None = None,
        *,
        init: bool = True,
    ) -> None:
        super().__init__(page, req, rsp, req_type, rsp_type)
        if init:  # SHARED_RING_INIT + FRONT_RING_INIT
            self._set(REQ_PROD, 0)
            self._set(RSP_PROD, 0)
            self._set(REQ_EVENT, 1)
            self._set(RSP_EVENT, 1)
            page[RING_OFFSET - 48 : RING_OFFSET] = bytes(48)  # pvt + __pad
        self.req_prod_pvt = 0
        self.rsp_cons = 0

    def free_requests(self) -> int:
        return self.nr_ents - ((self.req_prod_pvt - self.rsp_cons) & _MASK)

    def full(self) -> bool:
        return self.free_requests() == 0

    def put_request(self, *values: int | bytes) -> int:
        """Write a request at ``req_prod_pvt`` (not yet visible to the peer); returns its index."""
        if self.full():
            raise RuntimeError("ring full: check free_requests() first")
        idx = self.req_prod_pvt
        self.req.pack_into(self.page, self._slot(idx), *values)
        self.req_prod_pvt = (idx + 1) & _MASK
        return idx

    def put_request_bytes(self, raw: bytes) -> None:
        off = self._slot(self.req_prod_pvt)
        self.page[off : off + len(raw)] = raw
        self.req_prod_pvt = (self.req_prod_pvt + 1) & _MASK

    def push_requests(self) -> bool:
        """Publish private requests; True when the peer must be notified."""
        old = self._get(REQ_PROD)
        new = self.req_prod_pvt
        self._set(REQ_PROD, new)  # wmb(): CPython stores land in program order; x86 is TSO
        full_barrier()
        return _notify(new, old, self._get(REQ_EVENT))

    def unconsumed_responses(self) -> int:
        return (self._get(RSP_PROD) - self.rsp_cons) & _MASK

    def response_overflow(self) -> bool:
        """The backend claims more responses than we have requests outstanding."""
        return self.unconsumed_responses() > ((self.req_prod_pvt - self.rsp_cons) & _MASK)

    def get_response(self) -> Rsp:
        """Copy the response at ``rsp_cons`` out of the page and advance."""
        value = self._rsp_make(self.rsp.unpack_from(self.page, self._slot(self.rsp_cons)))
        self.rsp_cons = (self.rsp_cons + 1) & _MASK
        return value  # type: ignore[no-any-return,return-value]

    def get_response_bytes(self, size: int) -> bytes:
        off = self._slot(self.rsp_cons)
        self.rsp_cons = (self.rsp_cons + 1) & _MASK
        return bytes(self.page[off : off + size])

    def final_check_for_responses(self, lazy: bool = False) -> bool:
        """Re-arm ``rsp_event`` and look again; False means it is safe to sleep.  ``lazy``
        asks to be woken only once half of the requests outstanding are answered (what Linux
        netfront's tx did): completions that nobody waits for cost no wake-up each."""
        if self.unconsumed_responses():
            return True
        ahead = 1
        if lazy:
            ahead += ((self.req_prod_pvt - self.rsp_cons) & _MASK) >> 1
        self._set(RSP_EVENT, self.rsp_cons + ahead)
        full_barrier()
        return self.unconsumed_responses() > 0


class BackRing(_Ring[Req, Rsp]):
    """The back end: consumes requests (copied out once), produces responses in place."""

    def __init__(
        self,
        page: memoryview,
        req: struct.Struct,
        rsp: struct.Struct,
        req_type: type[Req] | None = None,
        rsp_type: type[Rsp] | None = None,
    ) -> None:
        super().__init__(page, req, rsp, req_type, rsp_type)
        self.rsp_prod_pvt = 0
        self.req_cons = 0

    def unconsumed_requests(self) -> int:
        """RING_HAS_UNCONSUMED_REQUESTS: bounded by the free response space too."""
        req = (self._get(REQ_PROD) - self.req_cons) & _MASK
        rsp = self.nr_ents - ((self.req_cons - self.rsp_prod_pvt) & _MASK)
        return min(req, rsp)

    def check_overflow(self) -> int:
        """Requests the peer claims to have produced; raises if more than the ring holds."""
        claimed = (self._get(REQ_PROD) - self.req_cons) & _MASK
        if claimed > self.nr_ents:
            raise RingOverflow(
                f"req_prod {self._get(REQ_PROD)} is {claimed} ahead of req_cons {self.req_cons}, "
                f"ring holds {self.nr_ents}"
            )
        return claimed

    def request_cons_overflow(self) -> bool:
        return ((self.req_cons - self.rsp_prod_pvt) & _MASK) >= self.nr_ents

    def get_request(self) -> Req:
        """Copy the request at ``req_cons`` out of shared memory once (XSA-155) and advance."""
        value = self._req_make(self.req.unpack_from(self.page, self._slot(self.req_cons)))
        self.req_cons = (self.req_cons + 1) & _MASK
        return value  # type: ignore[no-any-return,return-value]

    def get_request_bytes(self, size: int) -> bytes:
        off = self._slot(self.req_cons)
        self.req_cons = (self.req_cons + 1) & _MASK
        return bytes(self.page[off : off + size])

    def put_response(self, *values: int | bytes) -> int:
        """Write a response at ``rsp_prod_pvt``: in place, over a consumed request."""
        idx = self.rsp_prod_pvt
        self.rsp.pack_into(self.page, self._slot(idx), *values)
        self.rsp_prod_pvt = (idx + 1) & _MASK
        return idx

    def put_response_bytes(self, raw: bytes) -> None:
        off = self._slot(self.rsp_prod_pvt)
        self.page[off : off + len(raw)] = raw
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & _MASK

    def push_responses(self) -> bool:
        old = self._get(RSP_PROD)
        new = self.rsp_prod_pvt
        self._set(RSP_PROD, new)
        full_barrier()
        return _notify(new, old, self._get(RSP_EVENT))

    def wait_for_requests(self, needed: int) -> bool:
        """Ask to be notified once ``needed`` requests are unconsumed (req_event set that far
        ahead), then look again.  True if they are already there: no need to sleep."""
        if self.unconsumed_requests() >= needed:
            return True
        self._set(REQ_EVENT, self.req_cons + needed)
        full_barrier()
        return self.unconsumed_requests() >= needed

    def final_check_for_requests(self) -> bool:
        if self.unconsumed_requests():
            return True
        self._set(REQ_EVENT, self.req_cons + 1)
        full_barrier()
        return self.unconsumed_requests() > 0
