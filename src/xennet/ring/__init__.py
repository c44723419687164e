"""Front and back views of a ``DEFINE_RING_TYPES`` shared ring, with exactly ring.h semantics.

Pure: a ring works on a buffer (a 4 KiB page, shared or not) and returns decisions
(notify or not, more work or not); the caller does the I/O.
"""

from .shared import BackRing, FrontRing, RingOverflow

__all__ = ["BackRing", "FrontRing", "RingOverflow"]
