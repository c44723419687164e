"""Domain memory: a buddy allocator over the frames of the domain file.

The frame table in shared memory is the truth (so anyone can count pages); the free
lists are this process's index of it, rebuilt from the table when the domain is opened.
"""

from __future__ import annotations

import heapq
import threading

from ...core.vec import buffer_address
from ..base import MAX_ORDER, PAGE_SIZE, Page, PlatformError
from .layout import FT_FREE, FT_TAIL
from .shm import DomainFile

_ZERO = bytes(PAGE_SIZE << MAX_ORDER)


class SimMemory:
    def __init__(self, df: DomainFile) -> None:
        self._df = df
        lay = df.layout
        self._ft = df.buf[lay.frames_off : lay.frames_off + lay.nr_frames]
        # per order: the free block starts, plus a min-heap of them with lazy deletion
        # (stale heap entries are skipped) so alloc takes the lowest address cheaply
        self._free: list[set[int]] = [set() for _ in range(MAX_ORDER + 1)]
        self._heap: list[list[int]] = [[] for _ in range(MAX_ORDER + 1)]
        self._lock = threading.Lock()
        self._rebuild()
        self.view = df.mem  # every frame, frame f at f * PAGE_SIZE (the kernels address them so)
        self.base_address = buffer_address(df.mem)

    def _rebuild(self) -> None:
        """Index the free blocks of the frame table (pages a previous process left allocated stay so)."""
        ft = bytes(self._ft)

        def add(start: int, order: int) -> None:
            n = 1 << order
            if ft.count(FT_FREE, start, start + n) == n:
                self._push(order, start)
            elif order > 0:
                add(start, order - 1)
                add(start + n // 2, order - 1)

        for start in range(0, len(ft), 1 << MAX_ORDER):
            add(start, MAX_ORDER)

    def alloc(self, order: int = 0) -> Page:
        if not 0 <= order <= MAX_ORDER:
            raise PlatformError(f"alloc: order {order} outside 0..{MAX_ORDER}")
        with self._lock:
            k = order
            while k <= MAX_ORDER and not self._free[k]:
                k += 1
            if k > MAX_ORDER:
                raise PlatformError(f"domain {self._df.domid}: out of memory for an order-{order} page")
            start = self._pop(k)  # lowest address: keeps memory compact and runs reproducible
            while k > order:  # split, giving back the upper halves
                k -= 1
                self._push(k, start + (1 << k))
            n = 1 << order
            self._ft[start] = 1 + order
            if n > 1:
                self._ft[start + 1 : start + n] = bytes([FT_TAIL]) * (n - 1)
        view = self._df.mem[start * PAGE_SIZE : (start + n) * PAGE_SIZE]
        view[:] = _ZERO[: n * PAGE_SIZE]
        return Page(frame=start, order=order, view=view)

    def free(self, page: Page) -> None:
        frame, order = page.frame, page.order
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

    def frame_view(self, frame: int) -> memoryview:
        if not 0 <= frame < len(self._ft):
            raise PlatformError(f"frame {frame} outside domain {self._df.domid}'s {len(self._ft)} frames")
        return self._df.mem[frame * PAGE_SIZE : (frame + 1) * PAGE_SIZE]

    def close(self) -> None:
        self._ft.release()
