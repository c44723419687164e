"""The Linux uapi of the Xen devices: ``xen/gntdev.h``, ``xen/gntalloc.h``, ``xen/evtchn.h``.

These are the *Linux* headers (Debian ``linux-libc-dev``: ``/usr/include/xen/gntdev.h``,
``gntalloc.h``, ``evtchn.h``), not Xen's public headers; ``libxen-dev`` ships its own copy
of the same ABI under ``/usr/include/xen/sys/``.  Each struct is declared once here as a
``CStruct``; the ioctl numbers are computed from those sizes with the ``_IOC`` rules of
``asm-generic/ioctl.h`` (the layout of x86 and Arm, the two architectures Xen runs on).
``tests/platform_xen/test_uapi_c.py`` compiles both header sets and compares.

The structs are native-endian and pointer-sized members follow the running interpreter;
the codecs are little-endian, as on every architecture Xen supports.
"""

from __future__ import annotations

from ...abi.cstruct import Array, CStruct, u16, u32, u64
from ...abi.gntdev import GNTDEV_GRANT_COPY_SEGMENT, uptr

# --- asm-generic/ioctl.h ----------------------------------------------------------------

_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_DIRBITS = 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, type_: str | int, nr: int, size: int) -> int:  # noqa: N802 - the C name
    """``_IOC(dir, type, nr, size)``; refuses fields that would spill into their neighbours."""
    t = ord(type_) if isinstance(type_, str) else type_
    for name, value, bits in (
        ("dir", direction, _IOC_DIRBITS),
        ("type", t, _IOC_TYPEBITS),
        ("nr", nr, _IOC_NRBITS),
        ("size", size, _IOC_SIZEBITS),
    ):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"_IOC: {name} {value} does not fit in {bits} bits")
    return (
        (direction << _IOC_DIRSHIFT) | (t << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)
    )


def ioc_fields(number: int) -> tuple[int, int, int, int]:
    """(dir, type, nr, size) of an ioctl number: ``_IOC_DIR`` ... ``_IOC_SIZE``."""
    return (
        (number >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1),
        (number >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1),
        (number >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1),
        (number >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1),
    )


# --- types ------------------------------------------------------------------------------

grant_ref_t = u32
domid_t = u16
uint = u32  # C ``unsigned int``

# --- xen/gntdev.h -----------------------------------------------------------------------

GNTDEV_GRANT_REF = CStruct("struct ioctl_gntdev_grant_ref", [("domid", u32), ("ref", u32)])
GNTDEV_MAP_GRANT_REF = CStruct(
    "struct ioctl_gntdev_map_grant_ref",
    [("count", u32), ("pad", u32), ("index", u64), ("refs", GNTDEV_GRANT_REF)],  # refs[1]: variable
)
GNTDEV_UNMAP_GRANT_REF = CStruct(
    "struct ioctl_gntdev_unmap_grant_ref", [("index", u64), ("count", u32), ("pad", u32)]
)
GNTDEV_GET_OFFSET_FOR_VADDR = CStruct(
    "struct ioctl_gntdev_get_offset_for_vaddr",
    [("vaddr", u64), ("offset", u64), ("count", u32), ("pad", u32)],
)
GNTDEV_SET_MAX_GRANTS = CStruct("struct ioctl_gntdev_set_max_grants", [("count", u32)])
GNTDEV_UNMAP_NOTIFY = CStruct(
    "struct ioctl_gntdev_unmap_notify", [("index", u64), ("action", u32), ("event_channel_port", u32)]
)
GNTDEV_GRANT_COPY = CStruct("struct ioctl_gntdev_grant_copy", [("count", uint), ("segments", uptr)])

IOCTL_GNTDEV_MAP_GRANT_REF = _IOC(_IOC_NONE, "G", 0, GNTDEV_MAP_GRANT_REF.size)
IOCTL_GNTDEV_UNMAP_GRANT_REF = _IOC(_IOC_NONE, "G", 1, GNTDEV_UNMAP_GRANT_REF.size)
IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR = _IOC(_IOC_NONE, "G", 2, GNTDEV_GET_OFFSET_FOR_VADDR.size)
IOCTL_GNTDEV_SET_MAX_GRANTS = _IOC(_IOC_NONE, "G", 3, GNTDEV_SET_MAX_GRANTS.size)
IOCTL_GNTDEV_SET_UNMAP_NOTIFY = _IOC(_IOC_NONE, "G", 7, GNTDEV_UNMAP_NOTIFY.size)
IOCTL_GNTDEV_GRANT_COPY = _IOC(_IOC_NONE, "G", 8, GNTDEV_GRANT_COPY.size)

UNMAP_NOTIFY_CLEAR_BYTE = 0x1
UNMAP_NOTIFY_SEND_EVENT = 0x2

# --- xen/gntalloc.h ---------------------------------------------------------------------

GNTALLOC_ALLOC_GREF = CStruct(
    "struct ioctl_gntalloc_alloc_gref",
    [
        ("domid", u16),
        ("flags", u16),
        ("count", u32),
        ("index", u64),  # out
        ("gref_ids", Array(u32, 1)),  # out, ``count`` of them
    ],
)
GNTALLOC_DEALLOC_GREF = CStruct("struct ioctl_gntalloc_dealloc_gref", [("index", u64), ("count", u32)])
GNTALLOC_UNMAP_NOTIFY = CStruct(
    "struct ioctl_gntalloc_unmap_notify", [("index", u64), ("action", u32), ("event_channel_port", u32)]
)

GNTALLOC_FLAG_WRITABLE = 1

IOCTL_GNTALLOC_ALLOC_GREF = _IOC(_IOC_NONE, "G", 5, GNTALLOC_ALLOC_GREF.size)
IOCTL_GNTALLOC_DEALLOC_GREF = _IOC(_IOC_NONE, "G", 6, GNTALLOC_DEALLOC_GREF.size)
IOCTL_GNTALLOC_SET_UNMAP_NOTIFY = _IOC(_IOC_NONE, "G", 7, GNTALLOC_UNMAP_NOTIFY.size)

# --- xen/evtchn.h -----------------------------------------------------------------------

EVTCHN_BIND_VIRQ = CStruct("struct ioctl_evtchn_bind_virq", [("virq", uint)])
EVTCHN_BIND_INTERDOMAIN = CStruct(
    "struct ioctl_evtchn_bind_interdomain", [("remote_domain", uint), ("remote_port", uint)]
)
EVTCHN_BIND_UNBOUND_PORT = CStruct("struct ioctl_evtchn_bind_unbound_port", [("remote_domain", uint)])
EVTCHN_UNBIND = CStruct("struct ioctl_evtchn_unbind", [("port", uint)])
EVTCHN_NOTIFY = CStruct("struct ioctl_evtchn_notify", [("port", uint)])
EVTCHN_RESTRICT_DOMID = CStruct("struct ioctl_evtchn_restrict_domid", [("domid", domid_t)])

IOCTL_EVTCHN_BIND_VIRQ = _IOC(_IOC_NONE, "E", 0, EVTCHN_BIND_VIRQ.size)
IOCTL_EVTCHN_BIND_INTERDOMAIN = _IOC(_IOC_NONE, "E", 1, EVTCHN_BIND_INTERDOMAIN.size)
IOCTL_EVTCHN_BIND_UNBOUND_PORT = _IOC(_IOC_NONE, "E", 2, EVTCHN_BIND_UNBOUND_PORT.size)
IOCTL_EVTCHN_UNBIND = _IOC(_IOC_NONE, "E", 3, EVTCHN_UNBIND.size)
IOCTL_EVTCHN_NOTIFY = _IOC(_IOC_NONE, "E", 4, EVTCHN_NOTIFY.size)
IOCTL_EVTCHN_RESET = _IOC(_IOC_NONE, "E", 5, 0)
IOCTL_EVTCHN_RESTRICT_DOMID = _IOC(_IOC_NONE, "E", 6, EVTCHN_RESTRICT_DOMID.size)

EVTCHN_PORT_SIZE = 4  # read()/write() move evtchn_port_t (u32) values

# --- for the header check ---------------------------------------------------------------

STRUCTS: list[CStruct] = [
    GNTDEV_GRANT_REF,
    GNTDEV_MAP_GRANT_REF,
    GNTDEV_UNMAP_GRANT_REF,
    GNTDEV_GET_OFFSET_FOR_VADDR,
    GNTDEV_SET_MAX_GRANTS,
    GNTDEV_UNMAP_NOTIFY,
    GNTDEV_GRANT_COPY_SEGMENT,
    GNTDEV_GRANT_COPY,
    GNTALLOC_ALLOC_GREF,
    GNTALLOC_DEALLOC_GREF,
    GNTALLOC_UNMAP_NOTIFY,
    EVTCHN_BIND_VIRQ,
    EVTCHN_BIND_INTERDOMAIN,
    EVTCHN_BIND_UNBOUND_PORT,
    EVTCHN_UNBIND,
    EVTCHN_NOTIFY,
    EVTCHN_RESTRICT_DOMID,
]

# C member paths that differ from the dotted CStruct path (one-element variable arrays)
C_PATHS: dict[str, dict[str, str]] = {
    GNTDEV_MAP_GRANT_REF.cname: {"refs.domid": "refs[0].domid", "refs.ref": "refs[0].ref"},
}

IOCTLS: dict[str, int] = {
    name: value
    for name, value in sorted(globals().items())
    if name.startswith("IOCTL_") and isinstance(value, int)
}
CONSTANTS: dict[str, int] = {
    "GNTALLOC_FLAG_WRITABLE": GNTALLOC_FLAG_WRITABLE,
    "UNMAP_NOTIFY_CLEAR_BYTE": UNMAP_NOTIFY_CLEAR_BYTE,
    "UNMAP_NOTIFY_SEND_EVENT": UNMAP_NOTIFY_SEND_EVENT,
}
