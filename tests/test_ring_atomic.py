"""The ring indices are shared between processes: a reader must never see a torn or zeroed
value while the other end updates one (struct.pack_into zero-fills before writing bytes)."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import time

from xennet.abi import netif
from xennet.ring import BackRing, FrontRing


def _producer(buf: mmap.mmap, rounds: int, done: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    front: FrontRing[netif.TxRequest, netif.TxResponse] = FrontRing(
        memoryview(buf), netif.TX_REQUEST, netif.TX_RESPONSE, init=False
    )
    front.req_prod_pvt = front.rsp_cons = front.req_prod
    for _ in range(rounds):
        # publish one more request without ever filling the ring: consumers see steady growth
        front.req_prod_pvt = (front.req_prod_pvt + 1) & 0xFFFFFFFF
        front.rsp_cons = front.req_prod_pvt
        front.push_requests()
    done.set()


def test_a_concurrent_reader_never_sees_a_torn_producer_index() -> None:
    buf = mmap.mmap(-1, 4096)
    FrontRing(memoryview(buf), netif.TX_REQUEST, netif.TX_RESPONSE)  # SHARED_RING_INIT
    back: BackRing[netif.TxRequest, netif.TxResponse] = BackRing(
        memoryview(buf), netif.TX_REQUEST, netif.TX_RESPONSE
    )
    # start just below a carry into the second byte, where a byte-wise store is most visible
    ctx = mp.get_context("fork")
    done = ctx.Event()
    proc = ctx.Process(target=_producer, args=(buf, 300_000, done))
    proc.start()
    last = 0
    reads = bad = 0
    deadline = time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        now = back.req_prod
        if ((now - last) & 0xFFFFFFFF) > 1 << 31:  # went backwards: a torn or zeroed read
            bad += 1
        last = now
        reads += 1
    proc.join(10)
    assert proc.exitcode == 0
    assert reads > 1000
    assert bad == 0, f"{bad} of {reads} reads saw the index go backwards"
