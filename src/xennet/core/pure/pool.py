"""Frame pools: a stack of free frames and a state byte (and grant ref) per frame.

A frame is the pool's from ``pool_add`` until ``pool_drain``; while taken it must come back
through ``pool_give`` exactly once.  Anything else (a second give, a frame the pool never
had) is our own bug, and raises: a page given twice would be handed to two owners.
"""

from __future__ import annotations

from .. import records as r
from ..types import Buffer, WBuffer
from .codecs import POOL_HEADER


class PoolView:
    """Typed views of a pool buffer (header, stack, state, refs)."""

    __slots__ = ("buf", "hdr", "stack", "state", "refs", "cap", "nr_frames")

    def __init__(self, buf: WBuffer) -> None:
        mv = memoryview(buf).cast("B")
        if len(mv) < POOL_HEADER.size:
            raise ValueError("pool buffer too small for its header")
        _count, cap, nr_frames, _granted = POOL_HEADER.unpack_from(mv, 0)
        if len(mv) < r.pool_bytes(cap, nr_frames):
            raise ValueError("pool buffer too small for its header")
        if _count > cap:
            raise ValueError(f"pool: count {_count} above its capacity {cap}")
        stack, state, refs = r.pool_offsets(cap, nr_frames)
        self.buf = mv
        self.hdr = mv[: r.POOL_HEADER.size].cast("I")
        self.stack = mv[stack : stack + 4 * cap].cast("I")
        self.state = mv[state : state + nr_frames]
        self.refs = mv[refs : refs + 4 * nr_frames].cast("I")
        self.cap = cap
        self.nr_frames = nr_frames

    @property
    def count(self) -> int:
        return int(self.hdr[0])

    @property
    def granted(self) -> bool:
        return bool(self.hdr[3])

    def pop(self) -> int | None:
        n = self.hdr[0]
        if n == 0:
            return None
        frame = int(self.stack[n - 1])
        if frame >= self.nr_frames:
            return None  # cannot happen: only checked frames are pushed
        self.hdr[0] = n - 1
        self.state[frame] = r.POOL_TAKEN
        return frame

    def push(self, frame: int) -> None:
        if not 0 <= frame < self.nr_frames or self.state[frame] != r.POOL_TAKEN:
            raise ValueError(f"pool: frame {frame} is not out of this pool (given back twice?)")
        n = self.hdr[0]
        if n >= self.cap:
            raise ValueError("pool: stack full")
        self.stack[n] = frame
        self.hdr[0] = n + 1
        self.state[frame] = r.POOL_FREE


POOL_CORRUPT = "pool: a free-stack entry names no frame of the pool (corrupt pool)"


def pop_counted(p: PoolView) -> int:
    """A frame from a pool whose count said it has one: only a corrupt stack fails."""
    frame = p.pop()
    if frame is None:
        raise ValueError(POOL_CORRUPT)
    return frame


def pool_add(pool: WBuffer, frames: Buffer, refs: Buffer | None, n: int) -> None:
    """Make ``n`` frames (u32 each) the pool's, free; with ``refs`` their grant refs too."""
    p = PoolView(pool)
    f = memoryview(frames).cast("B").cast("I")
    rf = memoryview(refs).cast("B").cast("I") if refs is not None else None
    if len(f) < n or (rf is not None and len(rf) < n):
        raise ValueError("pool_add: fewer frames than n")
    for i in range(n):
        frame = int(f[i])
        if not 0 <= frame < p.nr_frames or p.state[frame] != r.POOL_NOT_OURS:
            raise ValueError(f"pool: frame {frame} cannot be added (out of range or already the pool's)")
        if p.hdr[0] >= p.cap:
            raise ValueError("pool: stack full")
        p.state[frame] = r.POOL_TAKEN
        p.push(frame)
        if rf is not None:
            p.refs[frame] = rf[i]


def pool_take(pool: WBuffer, n: int, out: WBuffer) -> int:
    """Take up to ``n`` free frames into ``out`` (u32 each); returns how many."""
    p = PoolView(pool)
    o = memoryview(out).cast("B").cast("I")
    if len(o) < n:
        raise ValueError("pool_take: out too small")
    got = 0
    while got < n:
        frame = p.pop()
        if frame is None:
            break
        o[got] = frame
        got += 1
    return got


def pool_give(pool: WBuffer, frames: Buffer, n: int) -> None:
    """Give ``n`` taken frames back."""
    p = PoolView(pool)
    f = memoryview(frames).cast("B").cast("I")
    if len(f) < n:
        raise ValueError("pool_give: fewer frames than n")
    for i in range(n):
        p.push(int(f[i]))


def pool_drain(pool: WBuffer, out: WBuffer) -> int:
    """Every free frame leaves the pool (to ``out``, u32 each); returns how many."""
    p = PoolView(pool)
    o = memoryview(out).cast("B").cast("I")
    n = p.count
    if len(o) < n:
        raise ValueError("pool_drain: out too small")
    for i in range(n):
        frame = int(p.stack[i])
        o[i] = frame
        if frame < p.nr_frames:
            p.state[frame] = r.POOL_NOT_OURS
    p.hdr[0] = 0
    return n


def pool_take_pairs(pool: WBuffer, n: int, out: WBuffer) -> int:
    """Take up to ``n`` frames of a granted pool as (ref, frame) records; returns how many."""
    p = PoolView(pool)
    if not p.granted:
        raise ValueError("pool_take_pairs: the pool's frames are not granted")
    o = memoryview(out).cast("B").cast("I")
    if len(o) < 2 * n:
        raise ValueError("pool_take_pairs: out too small")
    got = 0
    while got < n:
        frame = p.pop()
        if frame is None:
            break
        o[2 * got] = p.refs[frame]
        o[2 * got + 1] = frame
        got += 1
    return got


def pool_give_pairs(pool: WBuffer, pairs: Buffer, n: int) -> None:
    """Give back the frames of ``n`` (ref, frame) records (a granted pool keeps their refs)."""
    p = PoolView(pool)
    pr = memoryview(pairs).cast("B").cast("I")
    if len(pr) < 2 * n:
        raise ValueError("pool_give_pairs: fewer pairs than n")
    for i in range(n):
        p.push(int(pr[2 * i + 1]))
