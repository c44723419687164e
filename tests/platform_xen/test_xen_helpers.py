"""The pure parts of the xen platform: argument packing, grant copy planning, port and
message framing.  Byte layouts are checked against ``struct`` formats written here from
the C headers, not against the codecs under test."""

from __future__ import annotations

import os
import struct

import pytest

from xennet.abi.grant_table import (
    DOMID_SELF,
    GNTCOPY_dest_gref,
    GNTCOPY_source_gref,
    GNTST_bad_copy_arg,
    GNTST_bad_domain,
    GNTST_bad_gntref,
    GNTST_bad_page,
    GNTST_okay,
    GNTST_permission_denied,
)
from xennet.abi.xs_wire import HEADER, XsType
from xennet.platform.base import CopyPtr, GrantCopy, PlatformError
from xennet.platform.xen.evtchn import decode_ports, encode_ports
from xennet.platform.xen.gntalloc import pack_alloc_gref, unpack_alloc_gref
from xennet.platform.xen.gntdev import (
    SEGMENT_SIZE,
    gntst_name,
    pack_map_grant_ref,
    pack_segment,
    plan_copy,
    segment_statuses,
    unpack_map_index,
)
from xennet.platform.xen.xenbus import split_messages

SELF = 7
FRAMES = {10: 0x7F0000010000, 11: 0x7F0000011000}  # local frame -> address


def local(frame: int) -> int | None:
    return FRAMES.get(frame)


def g(ref: int, domid: int = 3, offset: int = 0) -> CopyPtr:
    return CopyPtr(ref, domid, offset)


def f(frame: int, offset: int = 0, domid: int = DOMID_SELF) -> CopyPtr:
    return CopyPtr(frame, domid, offset, is_gref=False)


# --- gntdev map / gntalloc alloc arguments ----------------------------------------------


def test_map_grant_ref_argument() -> None:
    buf = pack_map_grant_ref(5, [8, 9, 0xFFFFFFFF])
    assert len(buf) == 16 + 3 * 8
    assert struct.unpack_from("<IIQ", buf) == (3, 0, 0)
    assert [struct.unpack_from("<II", buf, 16 + 8 * i) for i in range(3)] == [(5, 8), (5, 9), (5, 0xFFFFFFFF)]
    struct.pack_into("<Q", buf, 8, 0x12345000)  # the kernel writes the index
    assert unpack_map_index(buf) == 0x12345000
    assert len(pack_map_grant_ref(1, [2])) == 24  # never shorter than the C struct (refs[1])
    with pytest.raises(PlatformError):
        pack_map_grant_ref(1, [])


def test_alloc_gref_argument() -> None:
    buf = pack_alloc_gref(0x1234, 3, writable=True)
    assert len(buf) == 16 + 3 * 4
    assert struct.unpack_from("<HHI", buf) == (0x1234, 1, 3)
    assert struct.unpack_from("<HHI", pack_alloc_gref(1, 1, writable=False)) == (1, 0, 1)
    assert len(pack_alloc_gref(1, 1, True)) == 24
    struct.pack_into("<Q3I", buf, 8, 0x3000, 11, 12, 13)
    assert unpack_alloc_gref(buf, 3) == (0x3000, (11, 12, 13))
    for bad in [(0x10000, 1), (1, 0)]:
        with pytest.raises(PlatformError):
            pack_alloc_gref(bad[0], bad[1], True)


# --- grant copy segments ----------------------------------------------------------------


def decode_segment(raw: bytes) -> dict[str, object]:
    length, flags, status = struct.unpack_from("<HHh", raw, 16)
    out: dict[str, object] = {"len": length, "flags": flags, "status": status}
    for name, off, bit in (("source", 0, GNTCOPY_source_gref), ("dest", 8, GNTCOPY_dest_gref)):
        out[name] = (
            struct.unpack_from("<IHH", raw, off) if flags & bit else struct.unpack_from("<Q", raw, off)[0]
        )
    return out


def test_segment_layouts() -> None:
    assert SEGMENT_SIZE == 24
    s = decode_segment(pack_segment((0xAABBCCDD, 100, 0x7FF0), 0x7F00DEADB000, 42))
    assert s == {
        "source": (0xAABBCCDD, 100, 0x7FF0),
        "dest": 0x7F00DEADB000,
        "len": 42,
        "flags": 1,
        "status": 0,
    }
    s = decode_segment(pack_segment(0x1000, (5, 4095, 1), 1))
    assert s == {"source": 0x1000, "dest": (5, 4095, 1), "len": 1, "flags": 2, "status": 0}
    s = decode_segment(pack_segment((1, 2, 3), (4, 5, 6), 4096))
    assert s["flags"] == 3 and s["source"] == (1, 2, 3) and s["dest"] == (4, 5, 6) and s["len"] == 4096


def test_statuses_are_signed() -> None:
    data = b"".join(
        pack_segment((0, 0, 0), 0, 0)[:20] + struct.pack("<h", st) + b"\0\0" for st in (0, -10, -3, 1)
    )
    assert segment_statuses(data, 4) == [0, -10, -3, 1]
    assert gntst_name(-10) == "copy arguments cross page boundary"
    assert gntst_name(-99) == "GNTST -99"


def test_plan_copy_statuses_and_items() -> None:
    ops = [
        GrantCopy(g(20, offset=100), f(10, 8), 50),  # gref -> local
        GrantCopy(f(11, 0, domid=SELF), g(21, offset=4000), 96),  # local -> gref (own domid by number)
        GrantCopy(f(10), f(11, 100), 10),  # local -> local: done here
        GrantCopy(g(22), g(23, domid=4), 4096),  # gref -> gref
        GrantCopy(f(10, domid=3), g(1), 1),  # another domain's frame: not ours to name
        GrantCopy(f(99), g(1), 1),  # a frame we do not have
        GrantCopy(g(1, offset=4000), f(10), 97),  # crosses the end of the grant page
        GrantCopy(g(1), f(10, 4095), 2),  # crosses the end of the local page
        GrantCopy(g(1, domid=0x10000), f(10), 1),  # domid does not fit domid_t
        GrantCopy(g(1 << 32), f(10), 1),  # ref does not fit grant_ref_t
        GrantCopy(g(1), f(10), 4097),
        GrantCopy(g(1, offset=-1), f(10), 1),
    ]
    statuses, items = plan_copy(ops, SELF, local)
    assert statuses == [
        GNTST_okay,
        GNTST_okay,
        GNTST_okay,
        GNTST_okay,
        GNTST_permission_denied,
        GNTST_bad_page,
        GNTST_bad_copy_arg,
        GNTST_bad_copy_arg,
        GNTST_bad_domain,
        GNTST_bad_gntref,
        GNTST_bad_copy_arg,
        GNTST_bad_copy_arg,
    ]
    assert [i for i, _ in items] == [0, 1, 2, 3]
    seg0, seg1, local_copy, seg3 = (item for _, item in items)
    assert isinstance(seg0, bytes) and isinstance(seg1, bytes) and isinstance(seg3, bytes)
    assert decode_segment(seg0) == {
        "source": (20, 100, 3),
        "dest": FRAMES[10] + 8,
        "len": 50,
        "flags": GNTCOPY_source_gref,
        "status": 0,
    }
    assert decode_segment(seg1)["source"] == FRAMES[11]
    assert decode_segment(seg1)["dest"] == (21, 4000, 3)
    assert local_copy == (FRAMES[10], FRAMES[11] + 100, 10)
    assert decode_segment(seg3)["flags"] == GNTCOPY_source_gref | GNTCOPY_dest_gref


def test_plan_copy_domain_checks_come_first() -> None:
    # as Xen: a foreign frame is refused before the bounds are looked at
    statuses, items = plan_copy([GrantCopy(f(10, 4000, domid=2), g(1), 500)], SELF, local)
    assert statuses == [GNTST_permission_denied] and items == []


# --- event channel ports ----------------------------------------------------------------


def test_port_encoding_through_a_pipe() -> None:
    r, w = os.pipe()
    try:
        os.write(w, encode_ports([1, 2, 0xFFFFFFFF, 77]))
        data = os.read(r, 4096)
    finally:
        os.close(r)
        os.close(w)
    assert data == struct.pack("=4I", 1, 2, 0xFFFFFFFF, 77)
    assert decode_ports(data) == ([1, 2, 0xFFFFFFFF, 77], b"")
    assert decode_ports(data + b"\x05\x00") == ([1, 2, 0xFFFFFFFF, 77], b"\x05\x00")
    assert decode_ports(b"") == ([], b"")
    with pytest.raises(PlatformError):
        encode_ports([1 << 32])


# --- xenbus message framing -------------------------------------------------------------


def msg(type_: int, req_id: int, payload: bytes) -> bytes:
    return HEADER.pack(type_, req_id, 0, len(payload)) + payload


def test_split_messages() -> None:
    a = msg(XsType.XS_READ, 1, b"domid\0")
    b = msg(XsType.XS_WRITE, 2, b"a\0b")
    c = msg(XsType.XS_GET_PERMS, 3, b"")
    assert split_messages(a + b + c) == ([a, b, c], b"")
    assert split_messages(a + b[:5]) == ([a], b[:5])
    assert split_messages(a + b[:-1]) == ([a], b[:-1])
    assert split_messages(b"") == ([], b"")
    assert split_messages(c) == ([c], b"")
