"""64 KiB GSO frames through the full protocol, beside memcpy of the same bytes.

The peer is one core copying 64 KiB chunks with a Python memoryview over a working set
larger than the last-level cache (256 MiB), as the data plane's copies run: out of and
into memory, not cache.
"""

from __future__ import annotations

import time

from ..abi import netif
from .small import FlowJob, run_flow

FRAME = netif.XEN_NETIF_MAX_TX_SIZE  # the protocol's largest packet: 65535 bytes
MSS = 1448
WORKING_SET = 256 << 20
CHUNK = 64 << 10


def memcpy_gbit(seconds: float = 0.5, working_set: int = WORKING_SET) -> float:
    """Gbit/s of copying 64 KiB chunks from one buffer to another, cycling through both."""
    src = memoryview(bytearray(b"\x5a" * working_set))
    dst = memoryview(bytearray(working_set))
    n = working_set // CHUNK
    copied = 0
    i = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(256):
            off = (i % n) * CHUNK
            dst[off : off + CHUNK] = src[off : off + CHUNK]
            i += 1
        copied += 256 * CHUNK
        if time.perf_counter() >= deadline:
            break
    return copied * 8 / (time.perf_counter() - t0) / 1e9


def bulk_job(direction: str, frames: int, **kw: object) -> FlowJob:
    return FlowJob(direction, frames, size=FRAME, gso_size=MSS, **kw)  # type: ignore[arg-type]


def bulk_flow(direction: str, frames: int) -> dict[str, object]:
    return run_flow(bulk_job(direction, frames))
