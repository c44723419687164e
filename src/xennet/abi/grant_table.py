"""xen/grant_table.h: v1 grant entries, GTF_* flags, grant copy, GNTST_* codes."""

from __future__ import annotations

from .cstruct import CStruct, s16, u16, u32, u64

GNTTAB_NR_RESERVED_ENTRIES = 8
GNTTAB_RESERVED_CONSOLE = 0
GNTTAB_RESERVED_XENSTORE = 1

GTF_invalid = 0
GTF_permit_access = 1
GTF_accept_transfer = 2
GTF_transitive = 3
GTF_type_mask = 3
_GTF_readonly = 2
GTF_readonly = 1 << _GTF_readonly
_GTF_reading = 3
GTF_reading = 1 << _GTF_reading
_GTF_writing = 4
GTF_writing = 1 << _GTF_writing
_GTF_sub_page = 8
GTF_sub_page = 1 << _GTF_sub_page

_GNTCOPY_source_gref = 0
GNTCOPY_source_gref = 1 << _GNTCOPY_source_gref
_GNTCOPY_dest_gref = 1
GNTCOPY_dest_gref = 1 << _GNTCOPY_dest_gref

GNTST_okay = 0
GNTST_general_error = -1
GNTST_bad_domain = -2
GNTST_bad_gntref = -3
GNTST_bad_handle = -4
GNTST_bad_virt_addr = -5
GNTST_bad_dev_addr = -6
GNTST_no_device_space = -7
GNTST_permission_denied = -8
GNTST_bad_page = -9
GNTST_bad_copy_arg = -10
GNTST_address_too_big = -11
GNTST_eagain = -12
GNTST_no_space = -13

GNTST_NAMES = {
    GNTST_okay: "okay",
    GNTST_general_error: "general error",
    GNTST_bad_domain: "unrecognised domain id",
    GNTST_bad_gntref: "unrecognised or inappropriate gntref",
    GNTST_bad_handle: "unrecognised or inappropriate handle",
    GNTST_bad_virt_addr: "inappropriate virtual address to map",
    GNTST_bad_dev_addr: "inappropriate device address to unmap",
    GNTST_no_device_space: "out of space in I/O MMU",
    GNTST_permission_denied: "not enough privilege for operation",
    GNTST_bad_page: "specified page was invalid for op",
    GNTST_bad_copy_arg: "copy arguments cross page boundary",
    GNTST_address_too_big: "transfer page address too large",
    GNTST_eagain: "operation not done; try again",
    GNTST_no_space: "out of space",
}

DOMID_SELF = 0x7FF0
DOMID_FIRST_RESERVED = 0x7FF0  # xen.h: a guest's domid is below this

GRANT_ENTRY_V1 = CStruct("struct grant_entry_v1", [("flags", u16), ("domid", u16), ("frame", u32)])
_COPY_PTR = CStruct(
    "",
    [("u", CStruct("", [("ref", u32), ("gmfn", u64)], union=True)), ("domid", u16), ("offset", u16)],
)
GNTTAB_COPY = CStruct(
    "struct gnttab_copy",
    [("source", _COPY_PTR), ("dest", _COPY_PTR), ("len", u16), ("flags", u16), ("status", s16)],
)

STRUCTS = [GRANT_ENTRY_V1, GNTTAB_COPY]

ENTRY = GRANT_ENTRY_V1.codec()
