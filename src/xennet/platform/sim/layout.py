"""The per-domain shared-memory file: one table of regions, every offset computed from it.

A domain file holds, in order::

    header | grant table | active table | maptrack | evtchn ports | pending | masked
           | frame table | (page aligned) memory

The grant table is real ``grant_entry_v1``; the rest is the hypervisor's private state
that Xen keeps in its own memory (active pins, maptrack, event channels, page owners).
Every process that opens the file derives the same offsets from the header's sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...abi.cstruct import CStruct, round_up, u8, u16, u32, u64
from ...abi.grant_table import GRANT_ENTRY_V1
from .. import buddy
from ..base import MAX_ORDER, PAGE_SIZE

MAGIC = 0x4D53_5445_4E4E_4558  # b"XENNETSM" little-endian
VERSION = 1

# header.state
STATE_READY = 1  # created by the toolstack; may be running or dead (see the alive lock)
STATE_DESTROYED = 2  # unlinked; openers holding the old file must re-open by path

HEADER = CStruct(
    "",
    [
        ("magic", u64),
        ("version", u32),
        ("domid", u32),
        ("nr_frames", u32),
        ("nr_grant_entries", u32),
        ("nr_maptrack", u32),
        ("nr_ports", u32),
        ("state", u32),
        ("pid", u32),  # last process that opened the domain (diagnostics)
    ],
)
HEADER_CODEC = HEADER.codec()
STATE_OFF = HEADER.offsetof("state")
PID_OFF = HEADER.offsetof("pid")

# Advisory OFD byte-range locks (fcntl F_OFD_SETLK) on the domain file.  The bytes are
# lock names, not data: a lock covers a table by convention.
LOCK_ALIVE = 0x100  # write-locked by the domain's process for its lifetime
LOCK_GRANT = 0x101  # grant entry flags vs active pins (end_access, map, unmap, copy)
LOCK_EVTCHN = 0x102  # port states and links (alloc, bind, close)

# Xen's active grant entry, reduced to the pins: ``pin`` counts every map, ``wpin`` the
# writable ones (GTF_reading is set while pin > 0, GTF_writing while wpin > 0).
ACTIVE = CStruct("", [("pin", u16), ("wpin", u16)])
ACTIVE_CODEC = ACTIVE.codec()

# Maptrack: the grants this domain has mapped, so the toolstack can release them when the
# domain dies and accounting can count them from outside.
MAPTRACK = CStruct("", [("domid", u16), ("flags", u16), ("ref", u32)])
MAPTRACK_CODEC = MAPTRACK.codec()
MT_INUSE = 1
MT_WRITABLE = 2
MT_PINNED = 4  # the granter's pin was taken: only these are released on destroy

# Event channel port; pending and masked bytes live in their own arrays so the owner can
# scan them in one slice.
EVTCHN = CStruct("", [("state", u8), ("_pad", u8), ("remote_domid", u16), ("remote_port", u32)])
EVTCHN_CODEC = EVTCHN.codec("state", "remote_domid", "remote_port")
ECS_FREE = 0  # Xen's numbering (xen/include/xen/sched.h)
ECS_UNBOUND = 2
ECS_INTERDOMAIN = 3

# Frame table: one byte per frame (the buddy allocator's: free, 1 + order at a head, tail).
FT_FREE, FT_TAIL = buddy.FT_FREE, buddy.FT_TAIL

_ALIGN = 64


@dataclass(frozen=True)
class Layout:
    nr_frames: int
    nr_grant_entries: int
    nr_maptrack: int
    nr_ports: int
    grant_off: int
    active_off: int
    maptrack_off: int
    evtchn_off: int
    pending_off: int
    masked_off: int
    frames_off: int
    mem_off: int
    file_size: int

    @classmethod
    def compute(cls, nr_frames: int, nr_grant_entries: int, nr_maptrack: int, nr_ports: int) -> Layout:
        if nr_frames <= 0 or nr_frames % (1 << MAX_ORDER):
            raise ValueError(f"nr_frames must be a positive multiple of {1 << MAX_ORDER}")
        if not 8 < nr_grant_entries <= 1 << 20 or not 0 < nr_maptrack <= 1 << 20:
            raise ValueError("bad grant table or maptrack size")
        if not 1 < nr_ports <= 1 << 16:
            raise ValueError("bad number of event channel ports")
        regions = [
            ("grant", GRANT_ENTRY_V1.size * nr_grant_entries),
            ("active", ACTIVE.size * nr_grant_entries),
            ("maptrack", MAPTRACK.size * nr_maptrack),
            ("evtchn", EVTCHN.size * nr_ports),
            ("pending", nr_ports),
            ("masked", nr_ports),
            ("frames", nr_frames),
        ]
        off = PAGE_SIZE  # the header has page 0 (and the lock bytes live in it)
        offs: dict[str, int] = {}
        for name, size in regions:
            off = round_up(off, _ALIGN)
            offs[name] = off
            off += size
        mem_off = round_up(off, PAGE_SIZE)
        return cls(
            nr_frames=nr_frames,
            nr_grant_entries=nr_grant_entries,
            nr_maptrack=nr_maptrack,
            nr_ports=nr_ports,
            grant_off=offs["grant"],
            active_off=offs["active"],
            maptrack_off=offs["maptrack"],
            evtchn_off=offs["evtchn"],
            pending_off=offs["pending"],
            masked_off=offs["masked"],
            frames_off=offs["frames"],
            mem_off=mem_off,
            file_size=mem_off + nr_frames * PAGE_SIZE,
        )
