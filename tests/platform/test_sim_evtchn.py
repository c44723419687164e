"""sim event channels in one process: binding, delivery with masking, closing, dead peers."""

from __future__ import annotations

import select

import pytest

from xennet.platform.base import PeerGone, PlatformError
from xennet.platform.sim import SimPlatform, SimWorld


def readable(p: SimPlatform, timeout: float = 0.0) -> bool:
    return bool(select.select([p.evtchn.fileno()], [], [], timeout)[0])


def connect(a: SimPlatform, b: SimPlatform) -> tuple[int, int]:
    """``a`` offers a port, ``b`` binds it; the bind's conservative pending event is consumed."""
    pa = a.evtchn.alloc_unbound(b.domid)
    pb = b.evtchn.bind_interdomain(a.domid, pa)
    assert b.evtchn.pending() == [pb]  # Xen sets the new local port pending
    b.evtchn.unmask(pb)
    assert not readable(b) and b.evtchn.pending() == []
    return pa, pb


def test_notify_wakes_and_masks_until_unmask(pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    p1_port, p0_port = connect(p1, p0)
    assert p0.accounting().ports == 1 and p1.accounting().ports == 1
    assert not readable(p1)
    p0.evtchn.notify(p0_port)
    assert readable(p1, 1.0)
    assert p1.evtchn.pending() == [p1_port]
    assert p1.evtchn.pending() == []  # reported once
    p0.evtchn.notify(p0_port)  # masked now: recorded, but no wake-up
    assert not readable(p1)
    assert p1.evtchn.pending() == []
    p1.evtchn.unmask(p1_port)  # ...delivered on unmask
    assert readable(p1, 1.0)
    assert p1.evtchn.pending() == [p1_port]
    p1.evtchn.unmask(p1_port)
    for _ in range(5):  # merged into one event
        p0.evtchn.notify(p0_port)
    assert p1.evtchn.pending() == [p1_port]
    p1.evtchn.unmask(p1_port)
    p1.evtchn.notify(p1_port)  # and the other way
    assert readable(p0, 1.0) and p0.evtchn.pending() == [p0_port]


def test_many_ports_beyond_the_socket_queue(pair: tuple[SimPlatform, SimPlatform]) -> None:
    """More notifications than the kernel queues datagrams: the pending bytes still carry all."""
    p0, p1 = pair
    links = [connect(p1, p0) for _ in range(40)]
    for _, p0_port in links:
        p0.evtchn.notify(p0_port)
    assert readable(p1, 1.0)
    assert sorted(p1.evtchn.pending()) == sorted(p1_port for p1_port, _ in links)
    assert p1.accounting().ports == 40


def test_bind_refusals(world: SimWorld, pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    world.create_domain(2, nr_frames=16)
    for_two = p1.evtchn.alloc_unbound(2)
    with pytest.raises(PlatformError, match="not unbound for us"):
        p0.evtchn.bind_interdomain(1, for_two)  # offered to domain 2
    with pytest.raises(PlatformError):
        p0.evtchn.bind_interdomain(1, 999)  # free port
    with pytest.raises(PlatformError):
        p0.evtchn.bind_interdomain(1, 5000)  # no such port
    with pytest.raises(PlatformError):
        p0.evtchn.bind_interdomain(9, 1)  # no such domain
    with pytest.raises(PlatformError):
        p0.evtchn.alloc_unbound(9)
    p1_port, _ = connect(p1, p0)
    with pytest.raises(PlatformError):
        p0.evtchn.bind_interdomain(1, p1_port)  # already bound
    with pytest.raises(PeerGone):
        p1.evtchn.notify(for_two)  # nobody bound it yet
    for bad in (0, 999, -1):
        with pytest.raises(PlatformError):
            p0.evtchn.notify(bad)
        with pytest.raises(PlatformError):
            p0.evtchn.unmask(bad)
        with pytest.raises(PlatformError):
            p0.evtchn.close(bad)


def test_close_makes_peer_notify_fail(pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, p1 = pair
    p1_port, p0_port = connect(p1, p0)
    p1.evtchn.close(p1_port)
    with pytest.raises(PeerGone):
        p0.evtchn.notify(p0_port)
    with pytest.raises(PlatformError):
        p1.evtchn.notify(p1_port)  # our own closed port is simply not bound
    p0.evtchn.close(p0_port)
    assert p0.accounting().ports == 0 and p1.accounting().ports == 0
    # ports are reused and work again
    p1_port2, p0_port2 = connect(p1, p0)
    p0.evtchn.notify(p0_port2)
    assert p1.evtchn.pending() == [p1_port2]


def test_loopback_port(pair: tuple[SimPlatform, SimPlatform]) -> None:
    p0, _ = pair
    a, b = connect(p0, p0)
    p0.evtchn.notify(b)
    assert readable(p0, 1.0) and p0.evtchn.pending() == [a]
    p0.evtchn.close(a)
    with pytest.raises(PeerGone):
        p0.evtchn.notify(b)
    p0.evtchn.close(b)
    assert p0.accounting().ports == 0


def test_notify_to_a_closed_platform_is_peer_gone(world: SimWorld) -> None:
    world.create_domain(0, nr_frames=16)
    world.create_domain(1, nr_frames=16)
    with world.platform(0) as p0:
        p1 = world.platform(1)
        _, p0_port = connect(p1, p0)
        p1.close()  # its process is gone: the port entries remain, nobody listens
        assert not world.domain_alive(1)
        with pytest.raises(PeerGone, match="not running"):
            p0.evtchn.notify(p0_port)
        # a restarted process for the domain listens again on the same ports
        with world.platform(1) as again:
            p0.evtchn.notify(p0_port)
            assert readable(again, 1.0) and again.evtchn.pending() != []
