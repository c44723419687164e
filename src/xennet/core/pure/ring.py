"""Moving ring entries in batches: out of a shared page once (XSA-155), and into it."""

from __future__ import annotations

from ...abi.ring import RING_OFFSET
from ..types import Buffer, WBuffer


def _check(page: Buffer, count: int, entry_size: int, nr_ents: int, buf: Buffer) -> None:
    if nr_ents <= 0 or nr_ents & (nr_ents - 1) or entry_size <= 0:
        raise ValueError(f"ring of {nr_ents} entries of {entry_size} bytes")
    if len(memoryview(page).cast("B")) < RING_OFFSET + nr_ents * entry_size:
        raise ValueError("ring page too small")
    if not 0 <= count <= nr_ents:
        raise ValueError(f"{count} entries: the ring holds {nr_ents}")
    if len(memoryview(buf).cast("B")) < count * entry_size:
        raise ValueError(f"buffer too small for {count} entries")


def ring_copy_out(page: Buffer, start: int, count: int, entry_size: int, nr_ents: int, out: WBuffer) -> None:
    """Copy ``count`` entries from ring index ``start`` (wrapping) into ``out``, contiguous."""
    _check(page, count, entry_size, nr_ents, out)
    src = memoryview(page).cast("B")
    dst = memoryview(out).cast("B")
    first = start & (nr_ents - 1)
    n1 = min(count, nr_ents - first)
    off = RING_OFFSET + first * entry_size
    dst[: n1 * entry_size] = src[off : off + n1 * entry_size]
    n2 = count - n1
    if n2:
        dst[n1 * entry_size : count * entry_size] = src[RING_OFFSET : RING_OFFSET + n2 * entry_size]


def ring_copy_in(page: WBuffer, start: int, count: int, entry_size: int, nr_ents: int, src: Buffer) -> None:
    """Write ``count`` contiguous entries of ``src`` into the ring from index ``start`` (wrapping)."""
    _check(page, count, entry_size, nr_ents, src)
    dst = memoryview(page).cast("B")
    s = memoryview(src).cast("B")
    first = start & (nr_ents - 1)
    n1 = min(count, nr_ents - first)
    off = RING_OFFSET + first * entry_size
    dst[off : off + n1 * entry_size] = s[: n1 * entry_size]
    n2 = count - n1
    if n2:
        dst[RING_OFFSET : RING_OFFSET + n2 * entry_size] = s[n1 * entry_size : count * entry_size]
