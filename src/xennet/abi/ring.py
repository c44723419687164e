"""xen/io/ring.h: the shared ring page header and the entry count rule."""

from __future__ import annotations

from .cstruct import Array, CStruct, u8, u32

PAGE_SIZE = 4096

# The header of every ``DEFINE_RING_TYPES`` shared ring; ``ring[]`` starts after it.
SRING_HEADER = CStruct(
    "",
    [
        ("req_prod", u32),
        ("req_event", u32),
        ("rsp_prod", u32),
        ("rsp_event", u32),
        ("pvt", Array(u8, 4)),
        ("__pad", Array(u8, 44)),
    ],
)
REQ_PROD = SRING_HEADER.offsetof("req_prod")
REQ_EVENT = SRING_HEADER.offsetof("req_event")
RSP_PROD = SRING_HEADER.offsetof("rsp_prod")
RSP_EVENT = SRING_HEADER.offsetof("rsp_event")
RING_OFFSET = SRING_HEADER.size  # offsetof(struct x_sring, ring)


def rd32(n: int) -> int:
    """Round down to a power of two (``__RD32``)."""
    return 1 << (n.bit_length() - 1) if n > 0 else 0


def const_ring_size(entry_size: int, page_size: int = PAGE_SIZE) -> int:
    """``__CONST_RING_SIZE``: entries of ``entry_size`` bytes that fit after the header."""
    return rd32((page_size - RING_OFFSET) // entry_size)
