"""The sim world: attaching, liveness, accounting from outside, and tearing domains down."""

from __future__ import annotations

import os
import pickle

import pytest

from xennet.abi.grant_table import DOMID_SELF, GNTST_bad_domain, GNTST_general_error, GNTST_okay
from xennet.platform.base import Accounting, CopyPtr, GrantCopy, PeerGone, PlatformError
from xennet.platform.sim import SimWorld


def test_create_attach_pickle(world: SimWorld) -> None:
    assert os.path.isdir(world.path) and world.path.startswith("/dev/shm/xennet-")
    world.create_domain(3, nr_frames=16)
    again = pickle.loads(pickle.dumps(world))
    assert again.path == world.path and again.domains() == [3]
    assert SimWorld.attach(world.path).xenstore_socket == os.path.join(world.path, "xenstored.sock")
    with again.platform(3) as p:
        # a guest talks on its own socket, so xenstored knows which domain it is
        assert p.domid == 3 and p.xenstore_path() == world.xenstore_socket + ".d3"
    with pytest.raises(PlatformError):
        world.create_domain(3)
    with pytest.raises(PlatformError):
        world.create_domain(4, nr_frames=17)  # not a multiple of the largest compound page
    with pytest.raises(PlatformError):
        world.platform(4)
    with pytest.raises(PlatformError):
        SimWorld.attach("/dev/shm/does-not-exist-xennet")
    with pytest.raises(PlatformError):
        SimWorld.create(os.path.basename(world.path).removeprefix("xennet-"))


def test_xenstore_socket_and_destroy_idempotent() -> None:
    w = SimWorld.create(f"t{os.getpid()}-xs", xenstore_socket="/run/somewhere/xs.sock")
    try:
        w.create_domain(0, nr_frames=16)
        with w.platform(0) as p:
            assert p.xenstore_path() == "/run/somewhere/xs.sock"
    finally:
        w.destroy()
    assert not os.path.exists(w.path)
    w.destroy()


def test_one_process_per_domain_and_liveness(world: SimWorld) -> None:
    world.create_domain(1, nr_frames=16)
    assert not world.domain_alive(1) and not world.domain_alive(2)
    p = world.platform(1)
    try:
        assert world.domain_alive(1)
        with pytest.raises(PlatformError, match="already running"):
            world.platform(1)
        with pytest.raises(PlatformError, match="running"):
            world.destroy_domain(1)
        page = p.memory.alloc(0)  # a live view must not keep the domain "alive" after close
    finally:
        p.close()
    assert not world.domain_alive(1)
    assert world.accounting(1) == Accounting(pages=1, grants=0, maps=0, ports=0)  # the leak shows
    del page


def test_destroy_domain_releases_its_maps_and_ports(world: SimWorld) -> None:
    world.create_domain(0, nr_frames=16)
    world.create_domain(1, nr_frames=16)
    with world.platform(1) as p1:
        pg = p1.memory.alloc(0)
        ref = p1.grants.grant_access(0, pg.frame, readonly=False)
        port = p1.evtchn.alloc_unbound(0)
        p0 = world.platform(0)
        m = p0.mapper.map(1, [ref], writable=True)
        p0.evtchn.bind_interdomain(1, port)
        p0.close()  # dies holding a map and a port
        assert world.accounting(0) == Accounting(pages=0, grants=0, maps=1, ports=1)
        assert p1.grants.end_access(ref) is False
        world.destroy_domain(0)
        assert not world.domain_exists(0) and not os.path.exists(f"{world.path}/d0.evtchn")
        with pytest.raises(PeerGone):
            p1.evtchn.notify(port)  # Xen leaves our end unbound...
        assert p1.grants.end_access(ref) is True
        world.create_domain(0, nr_frames=16)
        with world.platform(0) as new0:  # ...so a new domain 0 (a rebooted guest) can bind it again
            new_port = new0.evtchn.bind_interdomain(1, port)
            new0.evtchn.notify(new_port)
            assert p1.evtchn.pending() == [port]
        world.destroy_domain(0)
        p1.evtchn.close(port)
        p1.memory.free(pg)
        assert p1.accounting() == Accounting(0, 0, 0, 0)
        del m
    with pytest.raises(PlatformError):
        world.destroy_domain(0)


def test_zombie_pages_and_recreated_domain(world: SimWorld) -> None:
    world.create_domain(0, nr_frames=16)
    world.create_domain(1, nr_frames=16)
    with world.platform(0) as p0:
        p1 = world.platform(1)
        pg = p1.memory.alloc(0)
        pg.view[:6] = b"zombie"
        ref = p1.grants.grant_access(0, pg.frame, readonly=False)
        m = p0.mapper.map(1, [ref], writable=False)
        assert p0.mapper.copy([GrantCopy(CopyPtr(ref, 1, 0), CopyPtr(0, DOMID_SELF, 0, False), 1)]) == [0]
        p1.close()
        world.destroy_domain(1)
        assert bytes(m.view[:6]) == b"zombie"  # still mapped, still readable
        copy = [GrantCopy(CopyPtr(ref, 1, 0), CopyPtr(0, DOMID_SELF, 0, False), 1)]
        assert p0.mapper.copy(copy) == [GNTST_bad_domain]
        # a new domain 1: p0's cached view of the old one is dropped
        world.create_domain(1, nr_frames=16)
        with world.platform(1) as new1:
            assert p0.mapper.copy(copy) == [GNTST_general_error]  # the new domain granted nothing
            page = new1.memory.alloc(0)
            ref2 = new1.grants.grant_access(0, page.frame, readonly=True)
            copy2 = [GrantCopy(CopyPtr(ref2, 1, 0), CopyPtr(0, DOMID_SELF, 0, False), 1)]
            assert p0.mapper.copy(copy2) == [GNTST_okay]
            p0.mapper.unmap(m)  # unpins in the old, destroyed domain: harmless
            assert new1.grants.end_access(ref2)
            new1.memory.free(page)
