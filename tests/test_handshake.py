"""The xenbus handshake as tables (netfront/handshake.py, netback/handshake.py): every row
driven through the runner against a real xenstore, refusals counted, every way to Closed
driven in the LocalWorld and reconnected from, random event sequences, the doc in sync."""

from __future__ import annotations

import enum
import logging
import textwrap
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xennet.analysis.handshake_doc import render_reference
from xennet.netback import handshake as nb
from xennet.netfront import handshake as nf
from xennet.world.local import LocalWorld
from xennet.xenbus.device import XenbusDevice
from xennet.xenbus.handshake import Event, Runner, Table, reaches_closed, render_text, step, transitions
from xennet.xenbus.states import XenbusState as S
from xennet.xenbus.toolstack import VifSpec, attach_vif

ZERO = (0, 0, 0, 0)
TABLES = {"netfront": nf.TABLE, "netback": nb.TABLE}


held = LocalWorld.held  # (pages, grants, maps, ports) each domain holds now


def frames(n: int, size: int = 120) -> list[bytes]:
    return [bytes([i % 251]) * size for i in range(n)]


# --- every row, through the runner, on a real xenstore ----------------------------------------


ROWS = [(end, t) for end, table in TABLES.items() for t in transitions(table)]


@pytest.mark.parametrize(("end", "t"), ROWS, ids=[f"{e}:{t.own.name}:{t.event.value}" for e, t in ROWS])
def test_every_row_does_what_the_table_says(world: LocalWorld, end: str, t: object) -> None:
    from xennet.xenbus.handshake import Transition

    assert isinstance(t, Transition)
    node = "/local/domain/0/backend/vif/1/0" if end == "netback" else "/local/domain/1/device/vif/0"
    xs = world.clients[0] if end == "netback" else world.clients[1]
    attach_vif(world.toolstack, world.paths(), VifSpec())
    world.netback.stop()  # no driver: the test is the driver
    dev = XenbusDevice(xs, node)
    dev.adopt_state(t.own)
    xs.write(f"{node}/state", str(int(t.own)))
    done: list[enum.Enum] = []
    refused: list[int] = []

    def perform(action: enum.Enum, message: str, reason: str) -> None:
        done.append(action)

    runner = Runner("test", TABLES[end], dev, perform, lambda: refused.append(1), (RuntimeError,))
    got = runner.handle(t.event, "why", "handshake")
    assert got == t and not refused
    assert tuple(done) == t.actions
    assert dev.transitions[1:] == [w for w in t.writes if w != t.own] + (
        [t.next] if not t.writes and t.next != t.own else []
    )
    assert dev.state == t.next
    on_store = world.toolstack.read_str(f"{node}/state")
    assert on_store == str(int(t.writes[-1] if t.writes else t.own))  # a `to` row writes nothing


@pytest.mark.parametrize("end", TABLES)
def test_a_pair_not_in_the_table_is_refused_and_counted(
    world: LocalWorld, end: str, caplog: pytest.LogCaptureFixture
) -> None:
    table = TABLES[end]
    missing = [(s, e) for s in S for e in Event if (s, e) not in table]
    assert missing  # the tables do not take everything
    dev = XenbusDevice(world.clients[0], "/local/domain/0/backend/vif/9/0")
    n: list[int] = []
    runner = Runner("test", table, dev, lambda *a: None, lambda: n.append(1), (RuntimeError,))
    with caplog.at_level(logging.ERROR):
        for own, event in missing:
            dev.adopt_state(own)
            assert runner.handle(event) is None and dev.state == own
    assert len(n) == len(missing)
    assert sum("not in the table" in r.getMessage() for r in caplog.records) == len(missing)


def test_an_effect_that_fails_becomes_fatal() -> None:
    with LocalWorld() as w:
        dev = XenbusDevice(w.clients[0], "/local/domain/0/backend/vif/1/0")
        dev.adopt_state(S.InitWait)
        seen: list[tuple[enum.Enum, str]] = []

        def perform(action: enum.Enum, message: str, reason: str) -> None:
            seen.append((action, reason))
            if action == nb.Action.CONNECT:
                raise RuntimeError("no such ref")

        Runner("t", nb.TABLE, dev, perform, lambda: None, (RuntimeError,)).handle(Event.PEER_CONNECTED)
        assert dev.state == S.Closing  # the FATAL row ran instead of Connected
        assert seen == [
            (nb.Action.CONNECT, "handshake"),
            (nb.Action.RECORD_ERROR, "handshake"),
            (nb.Action.DISCONNECT, "handshake"),
        ]


# --- refusals in the live drivers ----------------------------------------------------------------


def test_a_backend_in_a_state_netback_never_takes_is_refused(
    world: LocalWorld, caplog: pytest.LogCaptureFixture
) -> None:
    front = world.attach()
    vif = world.vif()
    with caplog.at_level(logging.ERROR):
        world.toolstack.write(f"{vif.dev.nodename}/state", str(int(S.Reconfiguring)))
        world.pump()  # nothing escapes on_watch
    assert front.stats.handshake_refused == 1 and front.dev.state == S.Connected
    assert sum("not in the table" in r.getMessage() for r in caplog.records) == 1
    world.toolstack.write(f"{vif.dev.nodename}/state", str(int(S.Connected)))
    world.pump()
    world.to_backend.clear()
    assert world.send(frames(5)) == 5 and len(world.to_backend) == 5


def test_a_frontend_claiming_initwait_is_refused(world: LocalWorld) -> None:
    front = world.attach()
    vif = world.vif()
    world.clients[1].write(f"{front.dev.nodename}/state", str(int(S.InitWait)))
    world.pump()
    assert vif.stats.handshake_refused == 1 and vif.dev.state == S.Connected and vif.connected
    assert vif.stats.as_dict()["handshake_refused"] == 1


def test_reconnect_while_connected_is_refused_not_raised(world: LocalWorld) -> None:
    front = world.attach()
    assert front.reconnect() is False
    assert front.stats.handshake_refused == 1 and front.connected


# --- every way to Closed, then a clean reconnect ------------------------------------------------


def _peer_closes_frontend(w: LocalWorld) -> None:
    w.fronts[(1, 0)].close()


def _backend_fatal(w: LocalWorld) -> None:
    w.vif()._fail("handshake", "test: the backend gives up")


def _frontend_fatal(w: LocalWorld) -> None:
    w.fronts[(1, 0)]._fail("test: the frontend gives up")


def _frontend_released(w: LocalWorld) -> None:
    w.vif().frontend_died()  # as _reap_dead_frontends does on @releaseDomain


def _offline(w: LocalWorld) -> None:
    w.toolstack.write(f"{w.paths().backend}/online", "0")


def _backend_dir_removed(w: LocalWorld) -> None:
    w.toolstack.rm(w.paths().backend)  # netback drops the vif; netfront sees the backend vanish


def _frontend_dir_removed(w: LocalWorld) -> None:
    w.toolstack.rm(w.paths().frontend)  # netfront is detached; netback sees the frontend vanish


def _both_dirs_removed(w: LocalWorld) -> None:
    w.toolstack.rm(w.paths().frontend)
    w.toolstack.rm(w.paths().backend)


def _reconnect(w: LocalWorld) -> None:
    w.fronts[(1, 0)].reconnect()


def _online_then_reconnect(w: LocalWorld) -> None:
    w.toolstack.write(f"{w.paths().backend}/online", "1")
    w.fronts[(1, 0)].reconnect()


def _reattach(w: LocalWorld) -> None:
    """The toolstack attaches again; the netfront that lost its directory is a new device."""
    old = w.fronts.pop((1, 0))
    assert not old._watching and old.dev.state == S.Closed  # a detached device let go
    w.attach()  # writes both directories again, as libxl does


def _recreate_backend(w: LocalWorld) -> None:
    """The toolstack writes the backend again: the same netfront reconnects to the new vif."""
    front = w.fronts[(1, 0)]
    attach_vif(w.toolstack, w.paths(), VifSpec())  # rewrites the frontend's keys as well
    w.pump()
    assert front.dev.state == S.Connected


CLOSERS: list[tuple[str, Callable[[LocalWorld], None], Callable[[LocalWorld], None]]] = [
    ("frontend-closes", _peer_closes_frontend, _reconnect),
    ("backend-fatal", _backend_fatal, _reconnect),
    ("frontend-fatal", _frontend_fatal, _reconnect),
    ("frontend-domain-released", _frontend_released, _reconnect),
    ("toolstack-offline", _offline, _online_then_reconnect),
    ("backend-vanishes", _backend_dir_removed, _recreate_backend),
    ("frontend-detached", _frontend_dir_removed, _reattach),
    ("both-directories-removed", _both_dirs_removed, _reattach),
]


@pytest.mark.parametrize(("name", "close", "reopen"), CLOSERS, ids=[c[0] for c in CLOSERS])
def test_every_way_to_closed_frees_everything_and_reconnects(
    name: str, close: Callable[[LocalWorld], None], reopen: Callable[[LocalWorld], None]
) -> None:
    with LocalWorld() as w:
        baseline = held(w)
        w.attach()
        assert w.send(frames(40)) == 40 and w.deliver(frames(30)) == 30
        vif_before = w.vif()
        front_before = w.fronts[(1, 0)]
        close(w)
        w.pump()
        assert front_before.dev.state == S.Closed and front_before.tx is None
        assert vif_before.dev.state == S.Closed or vif_before.removed
        assert not vif_before.connected
        assert held(w) == baseline, name  # every page, grant, map and port came back
        reopen(w)
        w.pump()
        front, vif = w.fronts[(1, 0)], w.vif()
        assert front.connected and vif.connected and not front.broken
        w.to_backend.clear()
        w.to_guest.clear()
        assert w.send(frames(25)) == 25 and len(w.to_backend) == 25
        assert w.deliver(frames(20)) == 20 and w.to_guest[(1, 0)] == frames(20)
        for f in (front_before, front):
            assert f.stats.handshake_refused == 0, name
        for v in (vif_before, vif):
            assert v.stats.handshake_refused == 0, name
        w.detach()
        assert held(w) == baseline and not w.netback.vifs


def test_a_frontend_restarting_under_a_connection_is_taken_back(world: LocalWorld) -> None:
    """Linux's set_backend_state: Connected → Closing → Closed → InitWait on Initialising."""
    front = world.attach()
    vif = world.vif()
    world.clients[1].write(f"{front.dev.nodename}/state", str(int(S.Initialising)))
    world.pump()
    assert vif.dev.transitions[-3:] == [S.Closing, S.Closed, S.InitWait] and not vif.connected


# --- random sequences on the tables ----------------------------------------------------------


def _invariants(table: Table, start: S, events: list[Event]) -> None:
    states = {own for own, _e in table}
    own = start
    for event in events:
        t = step(table, own, event)
        if t is None:
            assert (own, event) not in table
            continue
        assert (own, event) in table and t.own == own and t.event == event
        assert t.next in states  # no dead end: the next state has rows of its own
        own = t.next
        assert reaches_closed(table, own)
        # from anywhere, our own fatal error or a detach ends Closed within two steps
        for stop in (Event.FATAL, Event.DETACHED):
            s = step(table, own, stop)
            if s is not None and s.next != S.Closed:
                peer_closed = step(table, s.next, Event.PEER_CLOSED)
                assert peer_closed is not None and peer_closed.next == S.Closed


@given(
    start=st.sampled_from([S.Initialising, S.Closed, S.Connected]),
    events=st.lists(st.sampled_from(list(Event)), max_size=60),
)
def test_random_events_on_the_netfront_table(start: S, events: list[Event]) -> None:
    _invariants(nf.TABLE, start, events)


@given(
    start=st.sampled_from([S.InitWait, S.Closed, S.Connected]),
    events=st.lists(st.sampled_from(list(Event)), max_size=60),
)
def test_random_events_on_the_netback_table(start: S, events: list[Event]) -> None:
    _invariants(nb.TABLE, start, events)


def test_closed_is_reachable_from_every_state_in_either_table() -> None:
    for table in TABLES.values():
        for own, _event in table:
            assert reaches_closed(table, own)


# --- the reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("mod", [nf, nb], ids=["netfront", "netback"])
def test_the_module_docstring_renders_the_table(mod: types.ModuleType) -> None:
    assert textwrap.indent(render_text(mod.TABLE), "    ") + "\n" in (mod.__doc__ or "")


def test_docs_handshake_md_matches_the_tables() -> None:
    path = Path(__file__).parent.parent / "docs" / "handshake.md"
    assert path.read_text() == render_reference(), (
        "regenerate: python -m xennet.analysis.handshake_doc > docs/handshake.md"
    )


def test_every_action_is_documented_and_used() -> None:
    for mod in (nf, nb):
        used = {a for t in transitions(mod.TABLE) for a in t.actions}
        assert set(mod.ACTIONS) == set(mod.Action) == used


# --- a state write never brings back a directory the toolstack removed -------------------------


def test_a_state_switch_after_a_detach_does_not_recreate_the_directory(world: LocalWorld) -> None:
    attach_vif(world.toolstack, world.paths(), VifSpec())
    world.netback.stop()
    node = "/local/domain/0/backend/vif/1/0"
    dev = XenbusDevice(world.clients[0], node)
    dev.adopt_state(S.InitWait)
    world.toolstack.rm(node)
    dev.switch_state(S.Closed)
    assert dev.state == S.Closed  # kept locally
    assert world.toolstack.try_read(f"{node}/state") is None
    assert not world.toolstack.exists(node)


def test_a_detach_racing_the_state_write_wins(world: LocalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The toolstack removes the directory between our read of ``state`` and our write: the
    transaction conflicts, the retry sees the node gone, and nothing is written (the orphan a
    plain write made kept a soak's hostile guest from ever being re-attached)."""
    from xennet.xenstore.client import Transaction

    attach_vif(world.toolstack, world.paths(), VifSpec())
    world.netback.stop()
    node = "/local/domain/0/backend/vif/1/0"
    dev = XenbusDevice(world.clients[0], node)
    dev.adopt_state(S.InitWait)
    real = Transaction.try_read
    reads: list[str | None] = []

    def try_read(self: Transaction, path: str) -> str | None:
        got = real(self, path)
        if not reads:
            world.toolstack.rm(node)  # lands inside our transaction's window
        reads.append(got)
        return got

    monkeypatch.setattr(Transaction, "try_read", try_read)
    dev.switch_state(S.Closing)
    assert reads[0] is not None and reads[-1] is None and len(reads) == 2
    assert not world.toolstack.exists(node)
    assert dev.state == S.Closing
