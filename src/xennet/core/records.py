"""The records the data-plane kernels read and write, declared once.

Both cores work on the same bytes: the pure-Python twin through the codecs below, the
compiled core through ``native/xennet_core.h``, whose layout ``tests/core/test_records_c.py``
checks against these declarations by compiling it.  Every record is little-endian and
packed by natural alignment (``abi.cstruct``).

The reason codes are a fixed set: a counter key is a name from ``*_NAMES``, never text a
peer can vary.
"""

from __future__ import annotations

import enum

from ..abi import netif
from ..abi.cstruct import Array, CStruct, u8, u16, u32

NONE32 = 0xFFFFFFFF  # "no frame", "no tag", "no ref"
PAGE_SIZE = 4096
RING_OFFSET = 64  # the shared ring header (abi.ring.RING_OFFSET)
MAX_PACKET = 0xFFFF  # a packet's size rides in the first slot's u16 size field
# The smallest gso_size netback takes.  Whoever segments a GSO packet (a port without TSO,
# the pcap writer) pays per segment, so the size floor is what bounds a packet's cost: at
# most ceil(65535 / 88) = 745 segments.  88 is Linux's TCP_MIN_MSS, the least MSS a Linux
# socket can be set to; real senders use hundreds of bytes (536 by default, RFC 1122).
GSO_MIN_SIZE = 88
# bytes of a GSO packet's own pieces its headers must lie in (packet/frames.MAX_HEADER_LEN:
# Ethernet + VLAN + IPv6 + TCP with options); what netback pulls covers them
GSO_HEADER_PEEK = 118

# --- a packet vector: packets as ranges of pieces -------------------------------------------

# A piece is at most one 4 KiB frame of bytes: a local frame, or (seed 003) another domain's
# grant.  ``ref`` is the grant a netfront's tx slot carries for it.
PIECE = CStruct(
    "struct xn_piece",
    [
        ("frame", u32),  # local frame; the grant ref when ``domid`` is not DOMID_SELF
        ("offset", u16),  # inside that frame or granted page
        ("len", u16),  # 1..4096, and offset + len <= 4096
        ("ref", u32),  # netfront tx: the grant the slot names (NONE32 until filled)
        ("domid", u16),  # DOMID_SELF (0x7ff0): local; else the granting domain
        ("flags", u16),  # PIECE_*
    ],
)
PIECE_OWN_GRANT = 1  # the ref was granted for this packet: end it when the slot is answered
PIECE_POOL = 2  # the frame came from a pool: give it back there when done
PIECE_RUN = 4  # not data: one grant the head's bytes were pulled from (seed 003 forwarding)
PIECE_PRIV = 8  # the frame came from the device's private pool (netfront's pulled heads)

PKT = CStruct(
    "struct xn_pkt",
    [
        ("piece0", u32),  # index of the first piece in the vector's piece array
        ("npieces", u16),
        ("flags", u16),  # PKT_*
        ("len", u32),  # bytes in all pieces
        ("tag", u32),  # the owner's cookie (an skb it holds), NONE32 for none
        ("gso_size", u16),
        ("gso_type", u8),
        ("error", u8),  # a reason code when a kernel refused the packet
        ("csum_start", u16),  # from the start of the packet, with PKT_CSUM_PARTIAL
        ("csum_offset", u16),  # from csum_start
    ],
)
PKT_CSUM_PARTIAL = netif.CSUM_PARTIAL  # the L4 checksum is to be completed (csum_blank)
PKT_DATA_VALIDATED = netif.CSUM_VALIDATED  # the checksum was verified, or need not be
PKT_CSUM_FAILED = 4  # csum_setup found no TCP/UDP header to complete the checksum of

# --- netback tx: what assembly found in a batch of copied-out requests -------------------------

TX_PKT = CStruct(
    "struct xn_tx_pkt",
    [
        ("first", u16),  # entry index of the first slot in the batch
        ("nslots", u16),  # data slots, the first included; slot k > 0 is entry first+nextras+k
        ("nextras", u16),  # extra-info entries after the first slot
        ("error", u16),  # TXE_*: answered with error responses
        ("size", u32),  # the first slot's size: the whole packet's length
        ("first_size", u16),  # the first slot's own bytes
        ("flags", u16),  # the first slot's flags
        ("gso_size", u16),
        ("gso_type", u8),
        ("kind", u8),  # TXK_*
        ("mcast", Array(u8, 6)),  # the multicast-control extra's address (TXK_MCAST_*)
        ("pad", u16),
    ],
)
TXK_DATA = 0
TXK_MCAST_ADD = 1
TXK_MCAST_DEL = 2

# --- the grant-copy batch of netback rx: one plan record per packet ---------------------------

RX_PLAN = CStruct(
    "struct xn_rx_plan",
    [
        ("seg0", u32),  # first segment of the packet's copies
        ("nsegs", u32),
        ("rsp0", u16),  # first prepared response (an index into the responses buffer)
        ("nrsp", u16),  # responses: data buffers + the GSO extra
        ("nbuffers", u16),  # data buffers (rx requests that get bytes)
        ("repacked", u16),  # 1 when the plan was redone with ``full`` to fit the slot limit
    ],
)

# --- netfront rx: what assembly found in a batch of copied-out responses ----------------------

RX_PKT = CStruct(
    "struct xn_rx_pkt",
    [
        ("first", u16),  # response index of the first slot in the batch
        ("nslots", u16),  # data slots; slot k > 0 is response first+nextras+k
        ("nextras", u16),
        ("error", u16),  # RXE_*: the packet is dropped and counted
        ("len", u32),  # bytes in the data slots
        ("flags", u16),  # the first response's flags
        ("gso_size", u16),
        ("gso_type", u8),
        ("pad0", u8),
        ("pad1", u16),
    ],
)

# --- netfront state: what each request id holds ------------------------------------------------

TX_SLOT = CStruct(
    "struct xn_tx_slot",
    [
        ("ref", u32),  # the grant the request named
        ("frame", u32),  # the local frame (NONE32 when the piece was not ours to free)
        ("inflight", u16),  # the in-flight packet it belongs to (NONE16: the id is free)
        ("flags", u16),  # PIECE_* of the piece
    ],
)
TX_INFLIGHT = CStruct(
    "struct xn_tx_inflight",
    [
        ("tag", u32),  # the owner's cookie, NONE32 for none
        ("slots_left", u16),  # requests not answered yet
        ("status", u16),  # the first non-OKAY status seen, as u16 (0: all OKAY)
    ],
)
RX_SLOT = CStruct(
    "struct xn_rx_slot",
    [
        ("frame", u32),  # the buffer posted with this id (NONE32: none)
        ("ref", u32),  # its grant
    ],
)
NONE16 = 0xFFFF

# The completion list of netfront tx: (tag, status) of each finished packet with a tag,
# and (ref, frame) of each own grant to end.
TX_DONE = CStruct("struct xn_tx_done", [("tag", u32), ("status", u16), ("pad", u16)])
END_REF = CStruct("struct xn_end_ref", [("ref", u32), ("frame", u32)])

# A frame pool: a header, then ``cap`` u32 free frames, then a state byte and a u32 grant
# ref per frame of the domain.
POOL_HEADER = CStruct(
    "struct xn_pool",
    [
        ("count", u32),  # free frames on the stack
        ("cap", u32),  # room on the stack
        ("nr_frames", u32),  # frames of the domain's memory this pool may hold
        ("granted", u32),  # every frame on the stack is granted (``ref`` is valid)
    ],
)
POOL_NOT_OURS = 0  # per-frame state: not this pool's
POOL_FREE = 1  # on the free stack
POOL_TAKEN = 2  # handed out, to come back


def pool_bytes(cap: int, nr_frames: int) -> int:
    return POOL_HEADER.size + 4 * cap + nr_frames + (-nr_frames % 4) + 4 * nr_frames


def pool_offsets(cap: int, nr_frames: int) -> tuple[int, int, int]:
    """(stack, state, refs) offsets in a pool buffer."""
    stack = POOL_HEADER.size
    state = stack + 4 * cap
    refs = state + nr_frames + (-nr_frames % 4)
    return stack, state, refs


RECORDS = [PIECE, PKT, TX_PKT, RX_PLAN, RX_PKT, TX_SLOT, TX_INFLIGHT, RX_SLOT, TX_DONE, END_REF, POOL_HEADER]


# --- reason codes --------------------------------------------------------------------------


class TxError(enum.IntEnum):
    """Why netback answers a packet with error responses (the frontend stays connected)."""

    OK = 0
    TOO_MANY_SLOTS = 1
    SLOTS_BIGGER_THAN_PACKET = 2
    RUNT = 3
    GRANT_COPY = 4  # a copy of the packet failed: see the GNTST counter
    NO_MEMORY = 5  # no page for the packet
    GSO_SIZE_TOO_SMALL = 6  # gso_size under GSO_MIN_SIZE: too many segments per packet
    BAD_GSO_HEADERS = 7  # a GSO packet that is not TCP over the IP version its type names


class TxFatal(enum.IntEnum):
    """Why netback disconnects a frontend as hostile (``fatal_tx_err``)."""

    NONE = 0
    MISSING_EXTRA_INFO = 1
    BAD_EXTRA_TYPE = 2
    TOO_MANY_SLOTS = 3
    TRUNCATED_PACKET = 4
    SLOT_CROSSES_PAGE = 5
    GSO_SIZE_ZERO = 6
    BAD_GSO_TYPE = 7
    RING_OVERFLOW = 8


class RxError(enum.IntEnum):
    """Why netfront drops one received packet (the device carries on)."""

    OK = 0
    TOO_MANY_SLOTS = 1
    BACKEND_ERROR = 2
    BACKEND_DROPPED = 3
    OFFSET_SIZE_PAST_PAGE = 4
    EMPTY_FIRST_SLOT = 5
    BAD_EXTRA_TYPE = 6
    UNNEGOTIATED_GSO = 7
    GSO_SIZE_ZERO = 8
    BAD_GSO_TYPE = 9
    OVERSIZE = 10  # more than the protocol's 65535 bytes
    BACKEND_KEPT_MAPPING = 11  # per-packet grants: a slot's grant could not be ended
    CSUM_BLANK_UNPARSEABLE = 12
    BAD_GSO_HEADERS = 13  # a GSO packet whose headers GSO cannot cut (not TCP, lengths disagree)


class RxFatal(enum.IntEnum):
    """Why netfront stops using the rings (``DeviceBroken``)."""

    NONE = 0
    NO_BUFFER_POSTED = 1  # a response in a slot whose buffer is not out
    ID_NOT_ISSUED = 2  # a response id that is not the id posted in that slot
    EXTRA_NOT_PRODUCED = 3
    ENDLESS_EXTRA = 4
    PAST_PRODUCED = 5  # a packet continues past the responses produced
    RESPONSE_OVERFLOW = 6


class TxDoneFatal(enum.IntEnum):
    """Why netfront's tx completion stops using the rings."""

    NONE = 0
    ID_NOT_IN_FLIGHT = 1


def lower_names(e: type[enum.IntEnum]) -> dict[int, str]:
    return {m.value: m.name.lower() for m in e}


TX_ERROR_NAMES = lower_names(TxError)
TX_FATAL_NAMES = lower_names(TxFatal)
RX_ERROR_NAMES = lower_names(RxError)
RX_FATAL_NAMES = lower_names(RxFatal)
