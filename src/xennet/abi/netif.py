"""xen/io/netif.h: the netif wire structs, flags and constants."""

from __future__ import annotations

from typing import NamedTuple

from .cstruct import Array, CStruct, s16, u8, u16, u32

XEN_NETIF_NR_SLOTS_MIN = 18
XEN_NETIF_MAX_TX_SIZE = 0xFFFF

# tx flags
_NETTXF_csum_blank = 0
NETTXF_csum_blank = 1 << _NETTXF_csum_blank
_NETTXF_data_validated = 1
NETTXF_data_validated = 1 << _NETTXF_data_validated
_NETTXF_more_data = 2
NETTXF_more_data = 1 << _NETTXF_more_data
_NETTXF_extra_info = 3
NETTXF_extra_info = 1 << _NETTXF_extra_info

# rx flags: bits 0 and 1 are swapped against tx
_NETRXF_data_validated = 0
NETRXF_data_validated = 1 << _NETRXF_data_validated
_NETRXF_csum_blank = 1
NETRXF_csum_blank = 1 << _NETRXF_csum_blank
_NETRXF_more_data = 2
NETRXF_more_data = 1 << _NETRXF_more_data
_NETRXF_extra_info = 3
NETRXF_extra_info = 1 << _NETRXF_extra_info
_NETRXF_gso_prefix = 4
NETRXF_gso_prefix = 1 << _NETRXF_gso_prefix

# --- a packet's checksum state across the rings: the one mapping of both ----------------
# The state, as both ends' packet records carry it (core/records.PKT_*): the L4 checksum is
# still to be completed (CHECKSUM_PARTIAL, csum_blank on the ring), or it was verified or
# need not be (CHECKSUM_UNNECESSARY, data_validated).  The rings put the two bits in swapped
# places; csum_blank always goes with data_validated (the data is fine, the sum is to come).
CSUM_PARTIAL = 1
CSUM_VALIDATED = 2


def _csum_flags(state: int, blank: int, validated: int) -> int:
    if state & CSUM_PARTIAL:
        return blank | validated
    if state & CSUM_VALIDATED:
        return validated
    return 0


def _csum_state(flags: int, blank: int, validated: int) -> int:
    if flags & blank:
        return CSUM_PARTIAL
    if flags & validated:
        return CSUM_VALIDATED
    return 0


def tx_csum_flags(state: int) -> int:
    """A tx request's checksum flags for a packet's state (netfront posting)."""
    return _csum_flags(state, NETTXF_csum_blank, NETTXF_data_validated)


def tx_csum_state(flags: int) -> int:
    """A packet's checksum state from its first tx request's flags (netback assembling)."""
    return _csum_state(flags, NETTXF_csum_blank, NETTXF_data_validated)


def rx_csum_flags(state: int) -> int:
    """An rx response's checksum flags for a packet's state (netback answering)."""
    return _csum_flags(state, NETRXF_csum_blank, NETRXF_data_validated)


def rx_csum_state(flags: int) -> int:
    """A packet's checksum state from its first rx response's flags (netfront building)."""
    return _csum_state(flags, NETRXF_csum_blank, NETRXF_data_validated)


XEN_NETIF_EXTRA_TYPE_NONE = 0
XEN_NETIF_EXTRA_TYPE_GSO = 1
XEN_NETIF_EXTRA_TYPE_MCAST_ADD = 2
XEN_NETIF_EXTRA_TYPE_MCAST_DEL = 3
XEN_NETIF_EXTRA_TYPE_HASH = 4
XEN_NETIF_EXTRA_TYPE_MAX = 5
_XEN_NETIF_EXTRA_FLAG_MORE = 0
XEN_NETIF_EXTRA_FLAG_MORE = 1 << _XEN_NETIF_EXTRA_FLAG_MORE

XEN_NETIF_GSO_TYPE_NONE = 0
XEN_NETIF_GSO_TYPE_TCPV4 = 1
XEN_NETIF_GSO_TYPE_TCPV6 = 2

# --- the extra-info chain and the GSO extra: the rules both ends read by -------------------
# (their C twin is in core/native/xn_core.h)
EXTRAS_OK = 0
EXTRAS_MISSING = 1  # a slot announced (extra_info, or ``more``) but not produced
EXTRAS_ENDLESS = 2  # more slots than there are extra types: a chain that never ends


def extra_chain(entries: memoryview, pos: int, n: int, entry: int) -> tuple[list[int], int]:
    """The extra-info chain that follows a slot with ``extra_info``: the positions of its
    slots from ``pos`` (of ``n`` produced ``entry``-byte ring entries), and how it ended.
    The caller checks each slot's type: whatever the chain's end, its slots come first."""
    out: list[int] = []
    more = True
    while more:
        if pos >= n:
            return out, EXTRAS_MISSING
        out.append(pos)
        more = bool(entries[pos * entry + 1] & XEN_NETIF_EXTRA_FLAG_MORE)
        pos += 1
        if len(out) > XEN_NETIF_EXTRA_TYPE_MAX:
            return out, EXTRAS_ENDLESS
    return out, EXTRAS_OK


def extra_type_valid(etype: int) -> bool:
    return XEN_NETIF_EXTRA_TYPE_NONE < etype < XEN_NETIF_EXTRA_TYPE_MAX


GSO_OK = 0
GSO_SIZE_ZERO = 1
GSO_BAD_TYPE = 2  # neither TCPv4 nor TCPv6


def gso_fault(size: int, gso_type: int) -> int:
    """What is wrong with a GSO extra's size and type, if anything (GSO_*)."""
    if size == 0:
        return GSO_SIZE_ZERO
    if gso_type not in (XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6):
        return GSO_BAD_TYPE
    return GSO_OK


NETIF_RSP_DROPPED = -2
NETIF_RSP_ERROR = -1
NETIF_RSP_OKAY = 0
NETIF_RSP_NULL = 1

# control ring
XEN_NETIF_CTRL_TYPE_INVALID = 0
XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS = 1
XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS = 2
XEN_NETIF_CTRL_TYPE_SET_HASH_KEY = 3
XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE = 4
XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE = 5
XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING = 6
XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM = 7
XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE = 8
XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING = 9
XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING = 10
XEN_NETIF_CTRL_STATUS_SUCCESS = 0
XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED = 1
XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER = 2
XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW = 3
XEN_NETIF_CTRL_HASH_ALGORITHM_NONE = 0
XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ = 1
_XEN_NETIF_CTRL_HASH_TYPE_IPV4 = 0
XEN_NETIF_CTRL_HASH_TYPE_IPV4 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4
_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP = 1
XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP
_XEN_NETIF_CTRL_HASH_TYPE_IPV6 = 2
XEN_NETIF_CTRL_HASH_TYPE_IPV6 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6
_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP = 3
XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP
_XEN_NETIF_CTRLF_GREF_readonly = 0
XEN_NETIF_CTRLF_GREF_readonly = 1 << _XEN_NETIF_CTRLF_GREF_readonly

# --- wire structs: one declaration each ------------------------------------

NETIF_TX_REQUEST = CStruct(
    "struct netif_tx_request",
    [("gref", u32), ("offset", u16), ("flags", u16), ("id", u16), ("size", u16)],
)
NETIF_TX_RESPONSE = CStruct("struct netif_tx_response", [("id", u16), ("status", s16)])
NETIF_RX_REQUEST = CStruct("struct netif_rx_request", [("id", u16), ("pad", u16), ("gref", u32)])
NETIF_RX_RESPONSE = CStruct(
    "struct netif_rx_response",
    [("id", u16), ("offset", u16), ("flags", u16), ("status", s16)],
)
_EXTRA_GSO = CStruct("", [("size", u16), ("type", u8), ("pad", u8), ("features", u16)])
_EXTRA_MCAST = CStruct("", [("addr", Array(u8, 6))])
_EXTRA_HASH = CStruct("", [("type", u8), ("algorithm", u8), ("value", Array(u8, 4))])
NETIF_EXTRA_INFO = CStruct(
    "struct netif_extra_info",
    [
        ("type", u8),
        ("flags", u8),
        (
            "u",
            CStruct(
                "",
                [("gso", _EXTRA_GSO), ("mcast", _EXTRA_MCAST), ("hash", _EXTRA_HASH), ("pad", Array(u16, 3))],
                union=True,
            ),
        ),
    ],
)
XEN_NETIF_CTRL_REQUEST = CStruct(
    "struct xen_netif_ctrl_request", [("id", u16), ("type", u16), ("data", Array(u32, 3))]
)
XEN_NETIF_CTRL_RESPONSE = CStruct(
    "struct xen_netif_ctrl_response", [("id", u16), ("type", u16), ("status", u32), ("data", u32)]
)
XEN_NETIF_GREF = CStruct("struct xen_netif_gref", [("ref", u32), ("flags", u16), ("status", u16)])

STRUCTS = [
    NETIF_TX_REQUEST,
    NETIF_TX_RESPONSE,
    NETIF_RX_REQUEST,
    NETIF_RX_RESPONSE,
    NETIF_EXTRA_INFO,
    XEN_NETIF_CTRL_REQUEST,
    XEN_NETIF_CTRL_RESPONSE,
    XEN_NETIF_GREF,
]

# --- typed values and their codecs --------------------------------------------


class TxRequest(NamedTuple):
    gref: int
    offset: int
    flags: int
    id: int
    size: int


class TxResponse(NamedTuple):
    id: int
    status: int


class RxRequest(NamedTuple):
    id: int
    gref: int


class RxResponse(NamedTuple):
    id: int
    offset: int
    flags: int
    status: int


class ExtraInfo(NamedTuple):
    """An extra-info slot.  ``data`` is the 6-byte union, decoded by type below."""

    type: int
    flags: int
    data: bytes


class GsoExtra(NamedTuple):
    size: int
    type: int
    features: int


TX_REQUEST = NETIF_TX_REQUEST.codec()
TX_RESPONSE = NETIF_TX_RESPONSE.codec()
RX_REQUEST = NETIF_RX_REQUEST.codec("id", "gref")
RX_RESPONSE = NETIF_RX_RESPONSE.codec()
EXTRA_INFO = NETIF_EXTRA_INFO.codec("type", "flags", "u.mcast.addr")  # the union as 6 raw bytes
EXTRA_GSO = NETIF_EXTRA_INFO.codec("type", "flags", "u.gso.size", "u.gso.type", "u.gso.features")
CTRL_REQUEST = XEN_NETIF_CTRL_REQUEST.codec()
CTRL_RESPONSE = XEN_NETIF_CTRL_RESPONSE.codec()


def gso_extra(size: int, gso_type: int, more: bool = False) -> bytes:
    flags = XEN_NETIF_EXTRA_FLAG_MORE if more else 0
    return EXTRA_GSO.pack(XEN_NETIF_EXTRA_TYPE_GSO, flags, size, gso_type, 0)


def decode_gso(extra: ExtraInfo) -> GsoExtra:
    _t, _f, size, gtype, features = EXTRA_GSO.unpack(bytes([extra.type, extra.flags]) + extra.data)
    return GsoExtra(size, gtype, features)
