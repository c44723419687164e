"""A buddy allocator over a frame table: one byte per frame, the truth about what is used.

The table says, for each frame, free (0), the head of an allocated block (1 + its order) or
a tail frame of one (0xFF); the free lists are an index of it, rebuilt from the table when
a domain is opened (the sim keeps the table in shared memory, so anyone can count pages).
Allocation takes the lowest free block, which keeps memory compact and runs reproducible.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import MutableSequence

from .base import MAX_ORDER, PlatformError

FT_FREE = 0
FT_TAIL = 0xFF


class Buddy:
    def __init__(self, table: MutableSequence[int] | memoryview, owner: str) -> None:
        self._ft = table
        self.owner = owner
        # per order: the free block starts, plus a min-heap of them with lazy deletion
        self._free: list[set[int]] = [set() for _ in range(MAX_ORDER + 1)]
        self._heap: list[list[int]] = [[] for _ in range(MAX_ORDER + 1)]
        self._lock = threading.Lock()
        self._rebuild()

    def __len__(self) -> int:
        return len(self._ft)

    def _rebuild(self) -> None:
        ft = bytes(self._ft)

        def add(start: int, order: int) -> None:
            n = 1 << order
            if ft.count(FT_FREE, start, start + n) == n:
                self._push(order, start)
            elif order > 0:
                add(start, order - 1)
                add(start + n // 2, order - 1)

        for start in range(0, len(ft) - len(ft) % (1 << MAX_ORDER), 1 << MAX_ORDER):
            add(start, MAX_ORDER)

    def alloc(self, order: int = 0) -> int:
        """The first frame of a free block of ``1 << order`` frames, now allocated."""
        if not 0 <= order <= MAX_ORDER:
            raise PlatformError(f"alloc: order {order} outside 0..{MAX_ORDER}")
        with self._lock:
            k = order
            while k <= MAX_ORDER and not self._free[k]:
                k += 1
            if k > MAX_ORDER:
                raise PlatformError(f"{self.owner}: out of memory for an order-{order} page")
            start = self._pop(k)
            while k > order:  # split, giving back the upper halves
                k -= 1
                self._push(k, start + (1 << k))
            n = 1 << order
            self._ft[start] = 1 + order
            if n > 1:
                self._ft[start + 1 : start + n] = bytes([FT_TAIL]) * (n - 1)
        return start

    def free(self, frame: int, order: int) -> None:
        if not 0 <= order <= MAX_ORDER or not 0 <= frame < len(self._ft) or frame & ((1 << order) - 1):
            raise PlatformError(f"free: bad page (frame {frame}, order {order})")
        with self._lock:
            if self._ft[frame] != 1 + order:
                raise PlatformError(f"free: frame {frame} is not an allocated order-{order} page")
            n = 1 << order
            self._ft[frame : frame + n] = bytes(n)
            start, k = frame, order
            while k < MAX_ORDER:  # coalesce with free buddies
                buddy = start ^ (1 << k)
                if buddy not in self._free[k]:
                    break
                self._free[k].remove(buddy)
                start = min(start, buddy)
                k += 1
            self._push(k, start)

    def used(self) -> int:
        """Frames allocated."""
        return len(self._ft) - bytes(self._ft).count(FT_FREE)

    def _push(self, order: int, start: int) -> None:
        self._free[order].add(start)
        heap = self._heap[order]
        heapq.heappush(heap, start)
        if len(heap) > 64 and len(heap) > 4 * len(self._free[order]):  # too many stale entries
            heap[:] = sorted(self._free[order])

    def _pop(self, order: int) -> int:
        free, heap = self._free[order], self._heap[order]
        while True:
            start = heapq.heappop(heap)
            if start in free:
                free.remove(start)
                return start
