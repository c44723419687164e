"""Linux ``xen/gntdev.h``: the grant-copy segment, the one batch format of every grant copy.

``IOCTL_GNTDEV_GRANT_COPY`` takes an array of these.  xennet builds its copies in exactly
this layout on every platform: the xen platform hands the array to the kernel unchanged,
and the sim's executor reads the same bytes.  A side is a grant ``{ref, offset, domid}``
(its ``GNTCOPY_*_gref`` flag set) or a virtual address in the copying process.
``platform/xen/uapi.py`` lists it with the other gntdev structs for the header check.
"""

from __future__ import annotations

import ctypes

from .cstruct import CStruct, Scalar, s16, u16, u32

POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)
uptr = Scalar("Q" if POINTER_SIZE == 8 else "I", POINTER_SIZE, "void *")  # a user pointer

_COPY_FOREIGN = CStruct("", [("ref", u32), ("offset", u16), ("domid", u16)])
_COPY_SIDE = CStruct("", [("virt", uptr), ("foreign", _COPY_FOREIGN)], union=True)
GNTDEV_GRANT_COPY_SEGMENT = CStruct(
    "struct gntdev_grant_copy_segment",
    [
        ("source", _COPY_SIDE),
        ("dest", _COPY_SIDE),
        ("len", u16),
        ("flags", u16),  # GNTCOPY_source_gref / GNTCOPY_dest_gref
        ("status", s16),  # GNTST_*, written by the executor
    ],
)
SEGMENT_SIZE = GNTDEV_GRANT_COPY_SEGMENT.size
