"""The sim's grant-copy executor: a batch of gntdev segments, checked the way Xen's
``gnttab_copy`` checks each op, in Xen's order, then copied.

For each segment: the domains first (``gnttab_copy_lock_domains``: a grant side names a
domain, which must exist), then the source and the destination buffers
(``gnttab_copy_claim_buf``: a grant must permit us, and permit writing for the
destination; a virtual address must be our own memory), then the bounds
(``gnttab_copy_buf``: neither side may cross its 4 KiB page).  The first failing check
gives the segment its GNTST status; a segment that passes is copied.  The caller holds
the granting domains' grant locks for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...abi.grant_table import (
    DOMID_SELF,
    GNTCOPY_dest_gref,
    GNTCOPY_source_gref,
    GNTST_bad_copy_arg,
    GNTST_bad_domain,
    GNTST_bad_gntref,
    GNTST_bad_page,
    GNTST_general_error,
    GNTST_okay,
    GTF_permit_access,
    GTF_readonly,
    GTF_type_mask,
)
from ..records import PAGE_SIZE
from ..types import Buffer, WBuffer
from .codecs import S16, SEG_DEST_OFF, SEG_SIZE, SEG_STATUS_OFF, SEG_TAIL, SEG_TAIL_OFF, SIDE_GREF, SIDE_VIRT

# One granting domain as the executor sees it: (domid, grant table entries, memory).
Domain = tuple[int, Buffer, WBuffer]
_ENTRY_SIZE = 8
MAX_DOMAINS = 256  # distinct granting domains one batch may name


def grant_check(table: Buffer, ref: int, domid: int, write: bool, nr_frames: int) -> tuple[int, int]:
    """(GNTST status, frame) for ``domid`` using grant ``ref`` of ``table`` (v1 entries)."""
    t = memoryview(table).cast("B")
    if not 0 <= ref < len(t) // _ENTRY_SIZE:
        return GNTST_bad_gntref, 0
    e = ref * _ENTRY_SIZE
    flags = t[e] | t[e + 1] << 8
    gdomid = t[e + 2] | t[e + 3] << 8
    frame = int.from_bytes(t[e + 4 : e + 8], "little")
    if flags & GTF_type_mask != GTF_permit_access or gdomid != domid:
        return GNTST_general_error, 0  # Xen: "Bad flags or dom"
    if write and flags & GTF_readonly:
        return GNTST_general_error, 0  # Xen: "Attempt to write-pin a r/o grant entry"
    if frame >= nr_frames:
        return GNTST_bad_page, 0
    return GNTST_okay, frame


def _find(domains: Sequence[Domain], domid: int) -> Domain | None:
    for d in domains:
        if d[0] == domid:
            return d
    return None


def grant_copy(
    segs: WBuffer, nsegs: int, own_domid: int, own_mem: WBuffer, own_base: int, domains: Sequence[Domain]
) -> int:
    """Run ``nsegs`` segments; each gets its status.  Returns how many failed."""
    s = memoryview(segs).cast("B")
    mem = memoryview(own_mem).cast("B")
    if len(s) < nsegs * SEG_SIZE:
        raise ValueError(f"segment buffer holds fewer than {nsegs} segments")
    failed = 0
    for i in range(nsegs):
        base = i * SEG_SIZE
        length, flags, _status = SEG_TAIL.unpack_from(s, base + SEG_TAIL_OFF)
        st = _one(s, base, length, flags, own_domid, mem, own_base, domains)
        S16.pack_into(s, base + SEG_STATUS_OFF, st)
        failed += st != GNTST_okay
    return failed


def _one(
    s: memoryview,
    base: int,
    length: int,
    flags: int,
    own_domid: int,
    mem: memoryview,
    own_base: int,
    domains: Sequence[Domain],
) -> int:
    sides = (
        (base, bool(flags & GNTCOPY_source_gref), False),
        (base + SEG_DEST_OFF, bool(flags & GNTCOPY_dest_gref), True),
    )
    # 1. the domains
    doms: list[Domain | None] = []
    for off, is_gref, _write in sides:
        if is_gref:
            _ref, _goff, domid = SIDE_GREF.unpack_from(s, off)
            d = _find(domains, own_domid if domid == DOMID_SELF else domid)
            if d is None:
                return GNTST_bad_domain
            doms.append(d)
        else:
            doms.append(None)
    # 2. claim each buffer: (memory, byte offset of the frame, offset inside the frame)
    where: list[tuple[memoryview, int, int]] = []
    for (off, is_gref, write), d in zip(sides, doms, strict=True):
        if is_gref:
            assert d is not None
            ref, goff, _domid = SIDE_GREF.unpack_from(s, off)
            dmem = memoryview(d[2]).cast("B")
            st, frame = grant_check(d[1], ref, own_domid, write, len(dmem) // PAGE_SIZE)
            if st != GNTST_okay:
                return st
            where.append((dmem, frame * PAGE_SIZE, goff))
        else:
            (virt,) = SIDE_VIRT.unpack_from(s, off)
            rel = virt - own_base
            if not 0 <= rel < len(mem) - len(mem) % PAGE_SIZE:  # whole pages only
                return GNTST_bad_page
            page = rel - rel % PAGE_SIZE
            where.append((mem, page, rel - page))
    # 3. the bounds: never across a page on either side
    (smem, sframe, soff), (dmem, dframe, doff) = where
    if soff + length > PAGE_SIZE or doff + length > PAGE_SIZE:
        return GNTST_bad_copy_arg
    if length:
        dmem[dframe + doff : dframe + doff + length] = smem[sframe + soff : sframe + soff + length]
    return GNTST_okay


def segment_domids(segs: Buffer, nsegs: int, own_domid: int) -> tuple[int, ...]:
    """The domains whose grants a batch names (DOMID_SELF as ``own_domid``), sorted: the
    grant locks to take, in this order."""
    s = memoryview(segs).cast("B")
    if len(s) < nsegs * SEG_SIZE:
        raise ValueError(f"segment buffer holds fewer than {nsegs} segments")
    out: set[int] = set()
    for i in range(nsegs):
        base = i * SEG_SIZE
        _len, flags, _st = SEG_TAIL.unpack_from(s, base + SEG_TAIL_OFF)
        for off, bit in ((base, GNTCOPY_source_gref), (base + SEG_DEST_OFF, GNTCOPY_dest_gref)):
            if flags & bit:
                domid = SIDE_GREF.unpack_from(s, off)[2]
                domid = own_domid if domid == DOMID_SELF else domid
                if domid not in out and len(out) == MAX_DOMAINS:
                    raise ValueError(f"a batch names more than {MAX_DOMAINS} domains")
                out.add(domid)
    return tuple(sorted(out))
