"""The twin's view of the records: one ``struct`` codec each, made from the declarations."""

from __future__ import annotations

import struct

from ...abi.gntdev import GNTDEV_GRANT_COPY_SEGMENT
from .. import records as r

PIECE = r.PIECE.codec()
PKT = r.PKT.codec()
TX_PKT = r.TX_PKT.codec()
RX_PLAN = r.RX_PLAN.codec()
RX_PKT = r.RX_PKT.codec()
TX_SLOT = r.TX_SLOT.codec()
TX_INFLIGHT = r.TX_INFLIGHT.codec()
RX_SLOT = r.RX_SLOT.codec()
TX_DONE = r.TX_DONE.codec()
END_REF = r.END_REF.codec()
POOL_HEADER = r.POOL_HEADER.codec()

# a segment: either side is a grant (ref, offset, domid) or a virtual address
_SEG = GNTDEV_GRANT_COPY_SEGMENT
SEG_SIZE = _SEG.size
SEG_TAIL = struct.Struct("<HHh")  # len, flags, status
SEG_TAIL_OFF = _SEG.offsetof("len")
SEG_STATUS_OFF = _SEG.offsetof("status")
SEG_DEST_OFF = _SEG.offsetof("dest")
SIDE_GREF = struct.Struct("<IHH")  # ref, offset, domid
SIDE_VIRT = struct.Struct("<Q")

# ring entries (netif.h)
TX_REQ = struct.Struct("<IHHHH")  # gref, offset, flags, id, size
TX_RSP = struct.Struct("<Hh")  # id, status
RX_REQ = struct.Struct("<HxxI")  # id, gref
RX_RSP = struct.Struct("<HHHh")  # id, offset, flags, status
EXTRA_HEAD = struct.Struct("<BB")  # type, flags
EXTRA_GSO = struct.Struct("<BBHBxH")  # type, flags, size, gso type, features

S16 = struct.Struct("<h")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
