"""``mb()``, the one memory barrier the shared-memory protocol needs."""

from __future__ import annotations

import threading

_fence_lock = threading.Lock()


def full_barrier() -> None:
    """``mb()``: a locked instruction orders our store before our next load (x86 store-load).
    The shared ring's notify checks and the sim's event channels both need it."""
    _fence_lock.acquire()
    _fence_lock.release()
