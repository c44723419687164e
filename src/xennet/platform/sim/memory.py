"""Domain memory: a buddy allocator (``platform/buddy.py``) over the frames of the domain file.

The frame table in shared memory is the truth (so anyone can count pages); the free lists
are this process's index of it, rebuilt from the table when the domain is opened.
"""

from __future__ import annotations

from ...core.vec import buffer_address
from ..base import MAX_ORDER, PAGE_SIZE, Page, PlatformError
from ..buddy import Buddy
from .shm import DomainFile

_ZERO = bytes(PAGE_SIZE << MAX_ORDER)


class SimMemory:
    def __init__(self, df: DomainFile) -> None:
        self._df = df
        lay = df.layout
        self._ft = df.buf[lay.frames_off : lay.frames_off + lay.nr_frames]
        self._buddy = Buddy(self._ft, f"domain {df.domid}")
        self.view = df.mem  # every frame, frame f at f * PAGE_SIZE (the kernels address them so)
        self.base_address = buffer_address(df.mem)

    def alloc(self, order: int = 0) -> Page:
        start = self._buddy.alloc(order)
        n = 1 << order
        view = self._df.mem[start * PAGE_SIZE : (start + n) * PAGE_SIZE]
        view[:] = _ZERO[: n * PAGE_SIZE]
        return Page(frame=start, order=order, view=view)

    def free(self, page: Page) -> None:
        self._buddy.free(page.frame, page.order)

    def frame_view(self, frame: int) -> memoryview:
        if not 0 <= frame < len(self._ft):
            raise PlatformError(f"frame {frame} outside domain {self._df.domid}'s {len(self._ft)} frames")
        return self._df.mem[frame * PAGE_SIZE : (frame + 1) * PAGE_SIZE]

    def close(self) -> None:
        self._ft.release()
