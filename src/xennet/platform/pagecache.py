"""A per-device cache of order-0 pages in front of a domain's allocator.

The data path allocates and frees a page or more per packet; recycling them here avoids a
trip through the allocator's shared frame table every time.  Pages in the cache are still
the domain's (accounting counts them), so a device drains its cache when it tears down;
after ``close`` the cache passes frees straight through (skbs may outlive their device).
"""

from __future__ import annotations

from .base import PAGE_SIZE, Memory, Page, PlatformError

_ZERO = bytes(PAGE_SIZE)


class PageCache:
    def __init__(self, memory: Memory, limit: int = 512) -> None:
        self.memory = memory
        self.limit = limit
        self._free: list[Page] = []
        self._cached: set[int] = set()  # frames in ``_free``: a second free of one is a bug
        self.closed = False
        self.hits = 0
        self.misses = 0

    def alloc(self, order: int = 0) -> Page:
        if order == 0 and self._free:
            self.hits += 1
            page = self._free.pop()
            self._cached.discard(page.frame)
            page.view[:] = _ZERO  # zeroed like a fresh page: no stale bytes reach a peer (XSA-403)
            return page
        self.misses += 1
        return self.memory.alloc(order)

    def free(self, page: Page) -> None:
        if page.frame in self._cached:
            raise PlatformError(f"page cache: frame {page.frame} freed twice")
        if page.order == 0 and not self.closed and len(self._free) < self.limit:
            self._free.append(page)
            self._cached.add(page.frame)
            return
        self.memory.free(page)

    def frame_view(self, frame: int) -> memoryview:
        return self.memory.frame_view(frame)

    def close(self) -> None:
        """Give every cached page back; later frees go straight to the allocator."""
        self.closed = True
        for page in self._free:
            self.memory.free(page)
        self._free.clear()
        self._cached.clear()
