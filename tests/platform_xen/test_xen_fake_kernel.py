"""The xen platform's logic over fake kernel devices (see ``xen_fakes``): the memory pool and
its grants, map/unmap, grant copy through real addresses, event channels, accounting."""

from __future__ import annotations

import ctypes
import select
from collections.abc import Iterator

import pytest
from xen_fakes import FakeEvtchn, FakeGntalloc, FakeGntdev, ForeignPage

from xennet.abi.grant_table import (
    DOMID_SELF,
    GNTST_bad_copy_arg,
    GNTST_bad_gntref,
    GNTST_general_error,
    GNTST_okay,
    GNTST_permission_denied,
)
from xennet.platform.base import PAGE_SIZE, Accounting, CopyPtr, GrantCopy, Platform, PlatformError
from xennet.platform.xen import XenMemory, XenPlatform
from xennet.platform.xen.device import XenDeviceError
from xennet.platform.xen.gntalloc import XenGrantTable

FRONT, BACK = 5, 0
ARENA = 48  # the fake gntalloc's limit is 64 pages


@pytest.fixture
def front() -> Iterator[tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]]:
    """A frontend (domid 5) whose memory is granted to the backend (domid 0)."""
    ga, gd, ev = FakeGntalloc(), FakeGntdev(), FakeEvtchn()
    p = XenPlatform.from_devices(FRONT, gd, ev, ga, peer_domid=BACK, arena_frames=ARENA)
    try:
        yield p, ga, gd, ev
    finally:
        p.close()


@pytest.fixture
def back() -> Iterator[tuple[XenPlatform, FakeGntdev, FakeEvtchn]]:
    """A backend (domid 0): anonymous memory, grants nothing."""
    gd, ev = FakeGntdev(), FakeEvtchn()
    p = XenPlatform.from_devices(BACK, gd, ev)
    try:
        yield p, gd, ev
    finally:
        p.close()


def test_is_a_platform(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p: Platform = front[0]
    assert p.domid == FRONT
    assert p.accounting() == Accounting(0, 0, 0, 0)


# --- memory -----------------------------------------------------------------------------


def test_the_arena_is_one_gntalloc_allocation(
    front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn],
) -> None:
    p, ga, _gd, _ev = front
    (index, (domid, flags, grefs)), *_ = ga.allocs.items()
    assert (domid, flags, len(grefs)) == (BACK, 1, ARENA)  # every page granted writable to the peer
    assert ga.mmaps == [(index, ARENA)]
    page = p.memory.alloc(2)
    assert page.nr_frames == 4 and len(page.view) == 4 * PAGE_SIZE and page.frame > 0
    assert bytes(page.view) == bytes(4 * PAGE_SIZE)
    assert len(ga.allocs) == 1  # an alloc is no ioctl: it comes from the arena
    # frame f is at base + f * 4096: what the kernels and gntdev's grant copy address
    page.view[PAGE_SIZE + 3] = 0xAB
    assert p.memory.frame_view(page.frame + 1)[3] == 0xAB
    assert p.memory.view[(page.frame + 1) * PAGE_SIZE + 3] == 0xAB
    addrs = [p.xen_memory.frame_address(page.frame + i) for i in range(4)]
    assert addrs == [p.memory.base_address + (page.frame + i) * PAGE_SIZE for i in range(4)]
    assert ctypes.string_at(p.memory.base_address + (page.frame + 1) * PAGE_SIZE + 3, 1) == b"\xab"
    assert p.accounting().pages == 4
    p.memory.free(page)
    assert not ga.deallocs and p.accounting().pages == 0
    with pytest.raises(PlatformError):
        p.memory.frame_view(page.frame)
    with pytest.raises(PlatformError):
        p.memory.free(page)


def test_frames_are_reused_lowest_first(
    front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn],
) -> None:
    p = front[0]
    a = p.memory.alloc()
    p.memory.free(a)
    b = p.memory.alloc()
    assert b.frame == a.frame and a.frame > 0  # frame 0 is never handed out
    p.memory.free(b)


def test_close_gives_the_arena_back(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p, ga, _gd, _ev = front
    (index, _entry), *_ = ga.allocs.items()
    p.memory.alloc()
    p.close()
    assert ga.deallocs == [(index, ARENA)] and not ga.allocs


def test_out_of_memory(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p = front[0]
    pages = [p.memory.alloc(4) for _ in range(ARENA // 16 - 1)]  # frame 0 holds back the first block
    with pytest.raises(PlatformError, match="out of memory"):
        p.memory.alloc(4)
    assert p.accounting().pages == 16 * len(pages)
    with pytest.raises(PlatformError, match="order 5"):
        p.memory.alloc(5)


def test_the_arena_halves_to_fit_gntalloc() -> None:
    ga = FakeGntalloc(limit=1500)
    m = XenMemory(ga, BACK, arena_frames=4096)  # 4096 and 2048 do not fit; 1024 does
    assert m.arena_frames == 1024 and len(m.view) == 1024 * PAGE_SIZE
    m.close()
    with pytest.raises(PlatformError, match="parameters/limit"):
        XenMemory(FakeGntalloc(limit=100), BACK, arena_frames=4096)


def test_backend_memory_is_anonymous(back: tuple[XenPlatform, FakeGntdev, FakeEvtchn]) -> None:
    p = back[0]
    page = p.memory.alloc(1)
    page.view[:] = b"x" * (2 * PAGE_SIZE)
    assert p.xen_memory.frame_address(page.frame + 1) is not None
    with pytest.raises(PlatformError, match="no grant peer"):
        p.grants.grant_access(3, page.frame, readonly=False)
    p.memory.free(page)


# --- grants -----------------------------------------------------------------------------


def test_grants_are_the_arena_grefs(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p, ga, _gd, _ev = front
    page = p.memory.alloc(1)
    (_domid, _flags, grefs) = next(iter(ga.allocs.values()))
    r0 = p.grants.grant_access(BACK, page.frame, readonly=False)
    r1 = p.grants.grant_access(BACK, page.frame + 1, readonly=False)
    assert (r0, r1) == grefs[page.frame : page.frame + 2]  # frame f's ref is the arena's f-th
    again = p.grants.grant_access(BACK, page.frame, readonly=False)  # same frame: same ref
    assert again == r0
    assert p.accounting().grants == 3
    assert p.grants.end_access(r0) is True
    assert p.grants.end_access(r0) is True
    with pytest.raises(PlatformError, match="not in use"):
        p.grants.end_access(r0)
    assert p.accounting().grants == 1
    with pytest.raises(PlatformError, match="cannot tell"):
        p.grants.is_mapped(r1)
    with pytest.raises(PlatformError, match="cannot grant it to domain 9"):
        p.grants.grant_access(9, page.frame, readonly=False)
    with pytest.raises(PlatformError, match="not allocated"):
        p.grants.grant_access(BACK, 999_999, readonly=False)
    assert p.grants.end_access(r1)
    p.memory.free(page)
    assert p.accounting() == Accounting(0, 0, 0, 0)


def test_readonly_grants_relaxed_or_refused(
    front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn],
) -> None:
    p = front[0]
    page = p.memory.alloc()
    ref = p.grants.grant_access(BACK, page.frame, readonly=True)
    assert p.grant_table.readonly_relaxed == 1
    p.grants.end_access(ref)
    strict = XenGrantTable(p.xen_memory, readonly="refuse")
    with pytest.raises(PlatformError, match="read-only"):
        strict.grant_access(BACK, page.frame, readonly=True)
    assert strict.grant_access(BACK, page.frame, readonly=False) == ref
    with pytest.raises(PlatformError):
        XenGrantTable(p.xen_memory, readonly="maybe")  # type: ignore[arg-type]
    p.memory.free(page)


def test_freeing_a_granted_page_leaves_the_leak_visible(
    front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn],
) -> None:
    p = front[0]
    page = p.memory.alloc()
    ref = p.grants.grant_access(BACK, page.frame, readonly=False)
    p.memory.free(page)
    assert p.accounting().grants == 1  # as on the sim, a leak is not hidden
    with pytest.raises(PlatformError):
        p.grants.end_access(ref)  # the ref died with its page


def test_memory_needs_both_or_neither() -> None:
    with pytest.raises(PlatformError):
        XenMemory(None, 3)


# --- map / unmap ------------------------------------------------------------------------


def test_map_and_unmap(back: tuple[XenPlatform, FakeGntdev, FakeEvtchn]) -> None:
    p, gd, _ev = back
    gd.grants[(FRONT, 8)] = ForeignPage(0x11)
    gd.grants[(FRONT, 9)] = ForeignPage(0x22)
    m = p.mapper.map(FRONT, [8, 9], writable=True)
    assert (m.domid, m.refs, m.writable) == (FRONT, (8, 9), True)
    assert len(m.view) == 2 * PAGE_SIZE and m.view[0] == 0x11 and m.view[PAGE_SIZE] == 0x22
    assert p.grant_mapper._live and p.accounting().maps == 2
    index = next(iter(gd.maps))
    p.mapper.unmap(m)
    assert gd.unmapped == [(index, 2)] and p.accounting().maps == 0
    with pytest.raises(ValueError):
        m.view[0]
    with pytest.raises(PlatformError, match="not a live mapping"):
        p.mapper.unmap(m)


def test_readonly_map_is_readonly(back: tuple[XenPlatform, FakeGntdev, FakeEvtchn]) -> None:
    p, gd, _ev = back
    gd.grants[(FRONT, 8)] = ForeignPage(0x33, readonly=True)
    m = p.mapper.map(FRONT, [8], writable=False)
    assert m.view.readonly and m.view[5] == 0x33
    p.mapper.unmap(m)


def test_failed_map_reports_the_gntst_code(back: tuple[XenPlatform, FakeGntdev, FakeEvtchn]) -> None:
    p, gd, _ev = back
    gd.grants[(FRONT, 8)] = ForeignPage(readonly=True)
    with pytest.raises(PlatformError) as e:
        p.mapper.map(FRONT, [8, 77], writable=False)
    assert e.value.status == GNTST_bad_gntref and "map ref 77" in str(e.value)
    with pytest.raises(PlatformError) as e:
        p.mapper.map(FRONT, [8], writable=True)  # a write map of a read-only grant
    assert e.value.status == GNTST_general_error
    assert not gd.maps and p.accounting().maps == 0  # the reservations were given back
    with pytest.raises(PlatformError) as e:
        p.mapper.map(FRONT, [], writable=False)
    assert e.value.status == GNTST_general_error


# --- grant copy -------------------------------------------------------------------------


def test_grant_copy_through_real_addresses(back: tuple[XenPlatform, FakeGntdev, FakeEvtchn]) -> None:
    p, gd, _ev = back
    src = ForeignPage()
    src.write(100, b"0123456789")
    dst = ForeignPage()
    gd.grants[(FRONT, 1)] = src
    gd.grants[(FRONT, 2)] = dst
    gd.grants[(FRONT, 3)] = ForeignPage(readonly=True)
    page = p.memory.alloc(1)
    second = page.frame + 1
    ops = [
        GrantCopy(CopyPtr(1, FRONT, 100), CopyPtr(second, DOMID_SELF, 7, False), 10),  # in
        GrantCopy(CopyPtr(second, DOMID_SELF, 7, False), CopyPtr(page.frame, BACK, 0, False), 10),  # local
        GrantCopy(CopyPtr(page.frame, DOMID_SELF, 0, False), CopyPtr(2, FRONT, 4086, True), 10),  # out
        GrantCopy(CopyPtr(1, FRONT, 0), CopyPtr(3, FRONT, 0), 1),  # into a read-only grant
        GrantCopy(CopyPtr(55, FRONT, 0), CopyPtr(page.frame, DOMID_SELF, 0, False), 1),  # no such ref
        GrantCopy(CopyPtr(1, FRONT, 4090), CopyPtr(page.frame, DOMID_SELF, 0, False), 10),  # crosses
        GrantCopy(CopyPtr(1, FRONT, 0), CopyPtr(page.frame, 4, 0, False), 1),  # not our frame
        GrantCopy(CopyPtr(1, FRONT, 100), CopyPtr(2, FRONT, 0), 3),  # gref to gref
    ]
    assert p.mapper.copy(ops) == [
        GNTST_okay,
        GNTST_okay,
        GNTST_okay,
        GNTST_general_error,
        GNTST_bad_gntref,
        GNTST_bad_copy_arg,
        GNTST_permission_denied,
        GNTST_okay,
    ]
    assert bytes(page.view[PAGE_SIZE + 7 : PAGE_SIZE + 17]) == b"0123456789"
    assert bytes(page.view[:10]) == b"0123456789"
    assert dst.data[4086:] == b"0123456789" and dst.data[:3] == b"012"
    # the local copy splits the batch so the order holds: [0], local, [2..7]
    assert gd.copy_calls == 2
    assert p.mapper.copy([]) == []
    p.memory.free(page)


# --- event channels ---------------------------------------------------------------------


def test_event_channels(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p, _ga, _gd, ev = front
    a = p.evtchn.alloc_unbound(BACK)
    b = p.evtchn.bind_interdomain(BACK, 12)
    assert ev.bound == {a: ("unbound", BACK, 0), b: ("interdomain", BACK, 12)}
    assert p.accounting().ports == 2
    assert p.evtchn.pending() == []
    ev.fire(b, 999, a, b)  # 999 is not ours: dropped; b twice: once
    assert select.select([p.evtchn.fileno()], [], [], 1.0)[0]
    assert p.evtchn.pending() == [b, a]
    p.evtchn.unmask(b)
    p.evtchn.unmask(a)
    assert ev.unmasked() == [b, a]
    p.evtchn.notify(a)
    assert ev.notified == [a]
    p.evtchn.close(a)
    assert a not in ev.bound and p.accounting().ports == 1
    for call in (p.evtchn.notify, p.evtchn.unmask, p.evtchn.close):
        with pytest.raises(PlatformError, match="not bound"):
            call(a)
    with pytest.raises(XenDeviceError, match="Invalid argument"):
        p.evtchn.bind_interdomain(BACK, 0xDEAD)
    with pytest.raises(PlatformError):
        p.evtchn.alloc_unbound(0x10000)


def test_pending_after_ring_overflow(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p, _ga, _gd, ev = front
    ports = [p.evtchn.alloc_unbound(BACK) for _ in range(3)]
    ev.overflow = True
    assert p.evtchn.pending() == sorted(ports)  # every bound port: nothing is lost
    assert ev.resets == 1 and p.event_channels.overflows == 1
    assert p.evtchn.pending() == []


def test_many_ports_in_one_read(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p, _ga, _gd, ev = front
    ports = [p.evtchn.alloc_unbound(BACK) for _ in range(1500)]  # more than a page of u32s
    ev.fire(*ports)
    got: list[int] = []
    while select.select([p.evtchn.fileno()], [], [], 0.2)[0]:
        got += p.evtchn.pending()
    assert got == ports


# --- the whole platform -----------------------------------------------------------------


def test_close_releases_everything(front: tuple[XenPlatform, FakeGntalloc, FakeGntdev, FakeEvtchn]) -> None:
    p, ga, gd, ev = front
    page = p.memory.alloc()
    p.grants.grant_access(BACK, page.frame, readonly=False)
    gd.grants[(BACK, 4)] = ForeignPage()
    p.mapper.map(BACK, [4], writable=True)
    port = p.evtchn.alloc_unbound(BACK)
    assert p.accounting() == Accounting(pages=1, grants=1, maps=1, ports=1)
    p.close()
    assert not ga.allocs and not gd.maps and port not in ev.bound
    assert ga.fd == gd.fd == ev.fd == -1
    p.close()  # twice is fine
