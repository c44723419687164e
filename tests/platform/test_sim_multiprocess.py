"""sim across processes: each domain in its own process, grants and events between them,
and a killed domain noticed by its peer."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from xennet.abi.grant_table import DOMID_SELF, GNTST_general_error, GNTST_okay
from xennet.platform.base import Accounting, CopyPtr, GrantCopy, PeerGone
from xennet.platform.sim import SimWorld

Spawn = Callable[..., BaseProcess]  # the ``spawn`` fixture (conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

WAIT = 10.0  # generous: only reached when something is broken


def recv(conn: Connection) -> Any:
    assert conn.poll(WAIT), "child did not answer"
    return conn.recv()


def wait_port(fd: int) -> None:
    assert select.select([fd], [], [], WAIT)[0], "no event"


def granter_domain(world: SimWorld, conn: Connection) -> None:
    """Domain 1: grants a writable and a read-only page to domain 0, then serves events."""
    p = world.platform(1)
    rw = p.memory.alloc(0)
    ro = p.memory.alloc(0)
    rw.view[:8] = b"rw-page!"
    ro.view[:8] = b"ro-page!"
    r_rw = p.grants.grant_access(0, rw.frame, readonly=False)
    r_ro = p.grants.grant_access(0, ro.frame, readonly=True)
    port = p.evtchn.alloc_unbound(0)
    conn.send((r_rw, r_ro, port))
    wait_port(p.evtchn.fileno())  # domain 0 wrote into rw and notified
    got = p.evtchn.pending()
    conn.send((got, bytes(rw.view[:16]), p.grants.end_access(r_rw)))
    p.evtchn.unmask(port)
    p.evtchn.notify(port)
    assert conn.recv() == "done"
    ended = p.grants.end_access(r_rw) and p.grants.end_access(r_ro)
    p.memory.free(rw)
    p.memory.free(ro)
    p.evtchn.close(port)
    conn.send((ended, p.accounting()))
    p.close()


def test_grants_and_events_cross_processes(world: SimWorld, spawn: Spawn) -> None:
    world.create_domain(0, nr_frames=16)
    world.create_domain(1, nr_frames=16)
    parent, child = Pipe()
    with world.platform(0) as p0:
        proc = spawn(granter_domain, world, child)
        r_rw, r_ro, port1 = recv(parent)
        assert world.domain_alive(1)
        port0 = p0.evtchn.bind_interdomain(1, port1)
        p0.evtchn.pending()
        p0.evtchn.unmask(port0)
        m = p0.mapper.map(1, [r_rw], writable=True)
        assert bytes(m.view[:8]) == b"rw-page!"
        mine = p0.memory.alloc(0)
        mine.view[:8] = b"from-d0!"
        ops = [
            GrantCopy(CopyPtr(r_ro, 1, 0), CopyPtr(mine.frame, DOMID_SELF, 8, False), 8),
            GrantCopy(CopyPtr(mine.frame, DOMID_SELF, 0, False), CopyPtr(r_rw, 1, 8), 16),
            GrantCopy(CopyPtr(mine.frame, DOMID_SELF, 0, False), CopyPtr(r_ro, 1, 0), 8),
        ]
        assert p0.mapper.copy(ops) == [GNTST_okay, GNTST_okay, GNTST_general_error]
        assert bytes(mine.view[:16]) == b"from-d0!ro-page!"
        assert world.accounting(0).maps == 1
        p0.evtchn.notify(port0)
        got, seen, ended_while_mapped = recv(parent)
        assert got == [port1]
        assert seen == b"rw-page!from-d0!"  # the copy landed in the other process's page
        assert ended_while_mapped is False
        wait_port(p0.evtchn.fileno())  # the reply event
        assert p0.evtchn.pending() == [port0]
        p0.mapper.unmap(m)
        parent.send("done")
        ended, acct = recv(parent)
        assert ended is True
        assert acct == Accounting(pages=0, grants=0, maps=0, ports=0)
        proc.join(WAIT)
        assert proc.exitcode == 0
        assert not world.domain_alive(1)
        with pytest.raises(PeerGone):
            p0.evtchn.notify(port0)  # domain 1 closed its end
        p0.evtchn.close(port0)
        p0.memory.free(mine)
        assert p0.accounting() == Accounting(0, 0, 0, 0)


def sleeping_domain(world: SimWorld, domid: int, peer: int, conn: Connection) -> None:
    """Grants a page, offers a port, maps the peer's grant if told one, then waits to be killed."""
    p = world.platform(domid)
    pg = p.memory.alloc(0)
    pg.view[:4] = b"dead"
    ref = p.grants.grant_access(peer, pg.frame, readonly=False)
    port = p.evtchn.alloc_unbound(peer)
    conn.send((ref, port))
    peer_ref = conn.recv()
    if peer_ref is not None:
        p.mapper.map(peer, [peer_ref], writable=True)
    conn.send("ready")
    time.sleep(WAIT * 3)


def test_killed_domain_is_noticed(world: SimWorld, spawn: Spawn) -> None:
    world.create_domain(0, nr_frames=16)
    world.create_domain(1, nr_frames=16)
    parent, child = Pipe()
    with world.platform(0) as p0:
        proc = spawn(sleeping_domain, world, 1, 0, child)
        ref, port1 = recv(parent)
        mine = p0.memory.alloc(0)
        my_ref = p0.grants.grant_access(1, mine.frame, readonly=False)
        parent.send(my_ref)
        assert recv(parent) == "ready"
        port0 = p0.evtchn.bind_interdomain(1, port1)
        m = p0.mapper.map(1, [ref], writable=False)
        p0.evtchn.notify(port0)
        assert world.domain_alive(1)
        assert p0.grants.end_access(my_ref) is False  # domain 1 has it mapped
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(WAIT)
        assert not world.domain_alive(1)
        with pytest.raises(PeerGone):
            p0.evtchn.notify(port0)
        assert bytes(m.view[:4]) == b"dead"  # its pages stay readable while mapped
        assert world.accounting(1) == Accounting(pages=1, grants=1, maps=1, ports=1)
        assert p0.grants.end_access(my_ref) is False  # a dead mapper still pins...
        world.destroy_domain(1)
        assert p0.grants.end_access(my_ref) is True  # ...until the toolstack destroys it
        p0.mapper.unmap(m)
        p0.evtchn.close(port0)
        p0.memory.free(mine)
        assert p0.accounting() == Accounting(0, 0, 0, 0)


def forked_child(conn: Connection) -> None:
    conn.send("up")
    time.sleep(WAIT * 3)


def test_fork_does_not_inherit_a_domain(world: SimWorld, spawn: Spawn) -> None:
    """A child forked while we hold domain 0 must not keep it alive after we close it."""
    world.create_domain(0, nr_frames=16)
    p0 = world.platform(0)
    parent, child = Pipe()
    try:
        spawn(forked_child, child)
        assert recv(parent) == "up"
        assert world.domain_alive(0)
        pg = p0.memory.alloc(0)  # the parent's platform still works after the fork
        p0.memory.free(pg)
    finally:
        p0.close()
    assert not world.domain_alive(0)
    with world.platform(0) as again:
        assert again.accounting() == Accounting(0, 0, 0, 0)
