"""Run inside the lab's dom0 by ``test_xenlab.py::test_xen_platform_in_dom0`` (named so that
the host's pytest does not collect it): the Xen devices themselves, looped back to dom0.  Without
/dev/xen or root every test fails: where this runs, they must be there."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from xennet.abi.grant_table import DOMID_SELF, GNTST_okay
from xennet.platform.base import PAGE_SIZE, Accounting, CopyPtr, GrantCopy
from xennet.platform.xen import XenbusTransport, XenPlatform, detect_domid
from xennet.platform.xen.xenbus import read_domid
from xennet.xenstore.client import XenstoreClient


@pytest.fixture(autouse=True)
def _real_xen() -> None:
    assert os.path.isdir("/dev/xen"), "no /dev/xen: not running in a Xen domain"
    assert os.geteuid() == 0, "the Xen devices need root"


@pytest.fixture
def self_granting() -> Iterator[XenPlatform]:
    """This domain, with its memory granted to itself (so it can map its own grants)."""
    domid = detect_domid()
    with XenPlatform(domid=domid, peer_domid=domid) as p:
        yield p


def test_domid_from_xenstore() -> None:
    t = XenbusTransport()
    try:
        domid = read_domid(t)
    finally:
        t.close()
    assert 0 <= domid < DOMID_SELF
    with XenPlatform() as p:
        assert p.domid == domid
        assert p.accounting() == Accounting(0, 0, 0, 0)


def test_xenstore_client_over_xenbus() -> None:
    xs = XenstoreClient(transport=XenbusTransport(), timeout=10)
    try:
        assert xs.read_str("domid").isdigit()
    finally:
        xs.close()


def test_event_channel_loopback(self_granting: XenPlatform) -> None:
    p = self_granting
    a = p.evtchn.alloc_unbound(p.domid)
    b = p.evtchn.bind_interdomain(p.domid, a)
    p.evtchn.notify(b)
    seen: set[int] = set()
    while a not in seen and select.select([p.evtchn.fileno()], [], [], 5)[0]:
        seen.update(p.evtchn.pending())
    assert a in seen
    p.evtchn.unmask(a)
    p.evtchn.close(b)
    p.evtchn.close(a)
    assert p.accounting().ports == 0


def test_grant_map_and_copy_loopback(self_granting: XenPlatform) -> None:
    p = self_granting
    page = p.memory.alloc(1)
    page.view[:5] = b"hello"
    refs = [p.grants.grant_access(p.domid, page.frame + i, readonly=False) for i in range(2)]
    m = p.mapper.map(p.domid, refs, writable=True)
    assert bytes(m.view[:5]) == b"hello"
    m.view[PAGE_SIZE : PAGE_SIZE + 3] = b"abc"
    assert bytes(page.view[PAGE_SIZE : PAGE_SIZE + 3]) == b"abc"
    assert p.accounting().maps == 2
    p.mapper.unmap(m)
    dst = p.memory.alloc()
    op = GrantCopy(CopyPtr(refs[1], p.domid, 0), CopyPtr(dst.frame, DOMID_SELF, 10, False), 3)
    assert p.mapper.copy([op]) == [GNTST_okay]
    assert bytes(dst.view[10:13]) == b"abc"
    for ref in refs:
        assert p.grants.end_access(ref)
    p.memory.free(dst)
    p.memory.free(page)
    assert p.accounting() == Accounting(0, 0, 0, 0)
