"""sim grant tables: entries as Xen lays them out, map/unmap pins, end_access, and grant copy
with every GNTST code the sim produces."""

from __future__ import annotations

import pytest

from xennet.abi.grant_table import (
    DOMID_SELF,
    ENTRY,
    GNTTAB_NR_RESERVED_ENTRIES,
    GNTST_bad_copy_arg,
    GNTST_bad_domain,
    GNTST_bad_gntref,
    GNTST_bad_page,
    GNTST_general_error,
    GNTST_okay,
    GNTST_permission_denied,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_writing,
)
from xennet.platform.base import PAGE_SIZE, Accounting, CopyPtr, GrantCopy, PlatformError
from xennet.platform.sim import SimMapping, SimPlatform, SimWorld
from xennet.platform.sim.shm import DomainFile

ZERO = Accounting(pages=0, grants=0, maps=0, ports=0)


def raw_entry(world: SimWorld, domid: int, ref: int) -> tuple[int, int, int]:
    """The grant entry as the shared page holds it (what a Xen guest's table would show)."""
    df = DomainFile(world.domain_path(domid), domid)
    try:
        flags, dom, frame = ENTRY.unpack_from(df.buf, df.grant_off + ref * ENTRY.size)
        return flags, dom, frame
    finally:
        df.close()


def poke_entry(world: SimWorld, domid: int, ref: int, flags: int, dom: int, frame: int) -> None:
    """Write an entry directly, as a guest may write its own grant table."""
    df = DomainFile(world.domain_path(domid), domid)
    try:
        ENTRY.pack_into(df.buf, df.grant_off + ref * ENTRY.size, flags, dom, frame)
    finally:
        df.close()


def local(frame: int, offset: int = 0, domid: int = DOMID_SELF) -> CopyPtr:
    return CopyPtr(frame, domid, offset, is_gref=False)


def test_grant_entry_is_v1_layout(world: SimWorld, pair: tuple[SimPlatform, SimPlatform]) -> None:
    _, p1 = pair
    pg = p1.memory.alloc(0)
    ro = p1.grants.grant_access(0, pg.frame, readonly=True)
    rw = p1.grants.grant_access(7, pg.frame, readonly=False)
    assert ro >= GNTTAB_NR_RESERVED_ENTRIES and rw >= GNTTAB_NR_RESERVED_ENTRIES and ro != rw
    assert raw_entry(world, 1, ro) == (GTF_permit_access | GTF_readonly, 0, pg.frame)
    assert raw_entry(world, 1, rw) == (GTF_permit_access, 7, pg.frame)
    assert p1.accounting().grants == 2
    assert p1.grants.end_access(ro) and p1.grants.end_access(rw)
    assert raw_entry(world, 1, ro) == (0, 0, 0)
    with pytest.raises(PlatformError):  # already ended
        p1.grants.end_access(ro)
    with pytest.raises(PlatformError):
        p1.grants.grant_access(0, 10**6, readonly=False)
    p1.memory.free(pg)
    assert p1.accounting() == ZERO


def test_map_is_live_and_pins_until_unmap(world: SimWorld, pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    pg = p1.memory.alloc(0)
    ref = p1.grants.grant_access(0, pg.frame, readonly=False)
    m = p0.mapper.map(1, [ref], writable=True)
    assert (m.domid, m.refs, m.writable, len(m.view)) == (1, (ref,), True, PAGE_SIZE)
    pg.view[:5] = b"front"
    assert bytes(m.view[:5]) == b"front"
    m.view[100:104] = b"back"
    assert bytes(pg.view[100:104]) == b"back"
    # while mapped: Xen's reading/writing bits are in the shared entry, end_access refuses
    assert raw_entry(world, 1, ref)[0] == GTF_permit_access | GTF_reading | GTF_writing
    assert p1.grants.is_mapped(ref)
    assert p0.accounting().maps == 1
    assert p1.grants.end_access(ref) is False
    assert raw_entry(world, 1, ref)[0] & GTF_permit_access  # nothing changed
    poke_entry(world, 1, ref, GTF_permit_access, 0, pg.frame)  # the granter clears the bits itself:
    assert p1.grants.is_mapped(ref) and p1.grants.end_access(ref) is False  # the pins still count
    poke_entry(world, 1, ref, GTF_permit_access | GTF_reading | GTF_writing, 0, pg.frame)
    # a second, read-only map of the same grant: writing stays until the writable one goes
    m2 = p0.mapper.map(1, [ref], writable=False)
    with pytest.raises(TypeError):
        m2.view[0] = 1
    p0.mapper.unmap(m)
    assert raw_entry(world, 1, ref)[0] == GTF_permit_access | GTF_reading
    assert p1.grants.end_access(ref) is False
    p0.mapper.unmap(m2)
    assert raw_entry(world, 1, ref)[0] == GTF_permit_access
    assert not p1.grants.is_mapped(ref)
    with pytest.raises(ValueError):  # the views die with the mapping
        bytes(m.view)
    with pytest.raises(PlatformError):
        p0.mapper.unmap(m)
    assert p1.grants.end_access(ref) is True
    p1.memory.free(pg)
    assert p0.accounting() == ZERO and p1.accounting() == ZERO


def test_map_errors_carry_gntst_codes(world: SimWorld, pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    pg = p1.memory.alloc(0)
    to_us = p1.grants.grant_access(0, pg.frame, readonly=False)
    to_us_ro = p1.grants.grant_access(0, pg.frame, readonly=True)
    to_other = p1.grants.grant_access(2, pg.frame, readonly=False)
    poke_entry(world, 1, 4000, GTF_permit_access, 0, 10**6)  # a frame the granter does not have
    cases = [
        (7, [to_us], False, GNTST_bad_domain),
        (1, [16384], False, GNTST_bad_gntref),
        (1, [-1], False, GNTST_bad_gntref),
        (1, [to_other], False, GNTST_general_error),  # granted to domain 2, not us
        (1, [3000], False, GNTST_general_error),  # never granted
        (1, [to_us_ro], True, GNTST_general_error),  # write-map of a read-only grant
        (1, [4000], False, GNTST_bad_page),
        (1, [to_us, 3000], False, GNTST_general_error),  # the first ref must not stay pinned
    ]
    for domid, refs, writable, status in cases:
        with pytest.raises(PlatformError) as e:
            p0.mapper.map(domid, refs, writable)
        assert e.value.status == status, (domid, refs, writable, e.value)
    assert p0.accounting().maps == 0
    assert not p1.grants.is_mapped(to_us)
    p0.mapper.unmap(p0.mapper.map(1, [to_us_ro], writable=False))  # read-only map of it is fine
    poke_entry(world, 1, 4000, 0, 0, 0)
    for ref in (to_us, to_us_ro, to_other):
        assert p1.grants.end_access(ref)
    p1.memory.free(pg)
    assert p0.accounting() == ZERO and p1.accounting() == ZERO


def test_multi_ref_map_contiguous_and_not(pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    big = p1.memory.alloc(1)
    lone = p1.memory.alloc(0)
    refs = [p1.grants.grant_access(0, big.frame + i, readonly=False) for i in range(2)]
    lone_ref = p1.grants.grant_access(0, lone.frame, readonly=False)
    big.view[PAGE_SIZE : PAGE_SIZE + 2] = b"p1"
    lone.view[:2] = b"lo"
    m = p0.mapper.map(1, refs, writable=True)
    assert isinstance(m, SimMapping)
    assert len(m.view) == 2 * PAGE_SIZE and bytes(m.view[PAGE_SIZE : PAGE_SIZE + 2]) == b"p1"
    n = p0.mapper.map(1, [lone_ref, refs[0]], writable=False)  # lone sits after big: not in order
    assert isinstance(n, SimMapping)
    assert bytes(n.pages[0][:2]) == b"lo" and len(n.pages) == 2
    with pytest.raises(PlatformError, match="contiguous"):
        n.view  # noqa: B018
    assert p0.accounting().maps == 4
    p0.mapper.unmap(m)
    p0.mapper.unmap(n)
    for ref in (*refs, lone_ref):
        assert p1.grants.end_access(ref)
    p1.memory.free(big)
    p1.memory.free(lone)
    assert p0.accounting() == ZERO and p1.accounting() == ZERO


def test_grant_table_full(world: SimWorld) -> None:
    world.create_domain(3, nr_frames=16, nr_grant_entries=12)
    with world.platform(3) as p:
        refs = [p.grants.grant_access(0, 0, readonly=True) for _ in range(12 - GNTTAB_NR_RESERVED_ENTRIES)]
        assert sorted(refs) == list(range(GNTTAB_NR_RESERVED_ENTRIES, 12))
        with pytest.raises(PlatformError, match="full"):
            p.grants.grant_access(0, 0, readonly=True)
        assert p.grants.end_access(refs[0])
        assert p.grants.grant_access(0, 0, readonly=True) == refs[0]


def test_grant_many_is_all_or_nothing(world: SimWorld) -> None:
    """A batch that fails part-way (here the table fills) ends the grants it made."""
    world.create_domain(3, nr_frames=16, nr_grant_entries=12)
    with world.platform(3) as p:
        free = 12 - GNTTAB_NR_RESERVED_ENTRIES
        with pytest.raises(PlatformError, match="full"):
            p.grants.grant_many(0, [0] * (free + 1), readonly=True)
        assert p.accounting().grants == 0
        refs = p.grants.grant_many(0, [0] * free, readonly=True)
        assert len(set(refs)) == free and p.accounting().grants == free
        assert p.grants.end_many(refs) == [] and p.accounting().grants == 0


def test_copy_every_direction(world: SimWorld, pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    world.create_domain(2, nr_frames=16)
    with world.platform(2) as p2:
        src = p1.memory.alloc(0)
        src.view[:] = bytes(range(256)) * 16
        dst2 = p2.memory.alloc(0)
        mine = p0.memory.alloc(0)
        g_src = p1.grants.grant_access(0, src.frame, readonly=True)
        g_dst = p2.grants.grant_access(0, dst2.frame, readonly=False)
        ops = [
            GrantCopy(CopyPtr(g_src, 1, 10), local(mine.frame, 0), 100),  # gref -> local
            GrantCopy(local(mine.frame, 0, domid=0), CopyPtr(g_dst, 2, 4000), 96),  # local -> gref
            GrantCopy(CopyPtr(g_src, 1, 0), CopyPtr(g_dst, 2, 0), PAGE_SIZE),  # gref -> gref, whole page
            GrantCopy(local(mine.frame, 0), local(mine.frame, 2000), 0),  # zero length is fine
        ]
        assert p0.mapper.copy(ops) == [GNTST_okay] * 4
        assert bytes(mine.view[:100]) == bytes(src.view[10:110])
        assert bytes(dst2.view[:4000]) == bytes(src.view[:4000])  # op 3 overwrote op 2 except the tail
        assert bytes(dst2.view[4000:4096]) == bytes(src.view[4000:4096])
        assert p0.accounting().maps == 0 and not p1.grants.is_mapped(g_src)
        assert p1.grants.end_access(g_src) and p2.grants.end_access(g_dst)
        p1.memory.free(src)
        p2.memory.free(dst2)
        p0.memory.free(mine)
        assert p2.accounting() == ZERO
    assert p0.accounting() == ZERO and p1.accounting() == ZERO


def test_copy_statuses_one_per_op(world: SimWorld, pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    pg = p1.memory.alloc(0)
    pg.view[:4] = b"good"
    rw = p1.grants.grant_access(0, pg.frame, readonly=False)
    ro = p1.grants.grant_access(0, pg.frame, readonly=True)
    other = p1.grants.grant_access(2, pg.frame, readonly=False)
    poke_entry(world, 1, 4000, GTF_permit_access, 0, 10**6)
    mine = p0.memory.alloc(0)
    frame = mine.frame

    def ok(n: int) -> GrantCopy:
        return GrantCopy(CopyPtr(rw, 1, 0), local(frame, n * 4), 4)

    cases = [
        (GrantCopy(CopyPtr(rw, 9, 0), local(frame), 4), GNTST_bad_domain),
        (GrantCopy(CopyPtr(16384, 1, 0), local(frame), 4), GNTST_bad_gntref),
        (GrantCopy(CopyPtr(other, 1, 0), local(frame), 4), GNTST_general_error),  # not granted to us
        (GrantCopy(CopyPtr(3000, 1, 0), local(frame), 4), GNTST_general_error),  # not granted at all
        (GrantCopy(local(frame), CopyPtr(ro, 1, 0), 4), GNTST_general_error),  # write into read-only
        (GrantCopy(CopyPtr(4000, 1, 0), local(frame), 4), GNTST_bad_page),
        (GrantCopy(local(pg.frame, domid=1), local(frame), 4), GNTST_permission_denied),  # frame, no gref
        (GrantCopy(CopyPtr(rw, 1, 0), local(pg.frame, domid=1), 4), GNTST_permission_denied),
        (GrantCopy(local(10**6), CopyPtr(rw, 1, 0), 4), GNTST_bad_page),
        (GrantCopy(CopyPtr(rw, 1, 0), local(-1), 4), GNTST_bad_page),
        (GrantCopy(CopyPtr(rw, 1, 4093), local(frame), 4), GNTST_bad_copy_arg),  # crosses on source
        (GrantCopy(CopyPtr(rw, 1, 0), local(frame, 4093), 4), GNTST_bad_copy_arg),  # crosses on dest
        (GrantCopy(CopyPtr(rw, 1, 0), local(frame), PAGE_SIZE + 1), GNTST_bad_copy_arg),
        (GrantCopy(CopyPtr(rw, 1, 0), local(frame), -1), GNTST_bad_copy_arg),
    ]
    # every bad op sits between two good ones: none stops the batch
    ops: list[GrantCopy] = [ok(0)]
    want = [GNTST_okay]
    for i, (op, status) in enumerate(cases, start=1):
        ops += [op, ok(i)]
        want += [status, GNTST_okay]
    assert p0.mapper.copy(ops) == want
    assert bytes(mine.view[: 4 * (len(cases) + 1)]) == b"good" * (len(cases) + 1)
    assert p0.mapper.copy([]) == []
    poke_entry(world, 1, 4000, 0, 0, 0)
    for ref in (rw, ro, other):
        assert p1.grants.end_access(ref)
    p1.memory.free(pg)
    p0.memory.free(mine)
    assert p0.accounting() == ZERO and p1.accounting() == ZERO


def test_copy_within_own_grants_and_frames(pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, _ = pair
    a = p0.memory.alloc(0)
    a.view[:3] = b"own"
    ref = p0.grants.grant_access(0, a.frame, readonly=True)  # granted to ourselves
    b = p0.memory.alloc(0)
    ops = [
        GrantCopy(CopyPtr(ref, DOMID_SELF, 0), local(b.frame, 0), 3),
        GrantCopy(local(a.frame, 0, domid=0), local(b.frame, 3), 3),
    ]
    assert p0.mapper.copy(ops) == [GNTST_okay, GNTST_okay]
    assert bytes(b.view[:6]) == b"ownown"
    assert p0.grants.end_access(ref)
    p0.memory.free(a)
    p0.memory.free(b)
