"""The machinery both ends' handshake tables share: events, rows, ``step()``, rendering.

Each end keeps its table in one file (``xennet.netfront.handshake``,
``xennet.netback.handshake``): ``(our state, event) -> (effects, next state)``, in the style
of h11's ``_state.py``.  ``step()`` is sans-IO: it looks the pair up and says what to do; the
device performs the effects (xenstore writes, connect, teardown).  A pair not in the table
is *refused*: the device logs one line, counts ``handshake_refused`` and stays where it is.

An effect is either one of the end's actions or a ``XenbusState``, which means "write this
state to our ``state`` node now".  A row's next state is the last state it writes, unless
the row says otherwise (a row for a removed directory writes nothing and still ends Closed).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .states import XenbusState

if TYPE_CHECKING:
    from .device import XenbusDevice

log = logging.getLogger(__name__)


class Event(enum.StrEnum):
    """What can happen to one end of a xenbus device."""

    PEER_UNKNOWN = "peer Unknown"  # the peer wrote 0 or garbage
    PEER_INITIALISING = "peer Initialising"
    PEER_INITWAIT = "peer InitWait"
    PEER_INITIALISED = "peer Initialised"
    PEER_CONNECTED = "peer Connected"
    PEER_CLOSING = "peer Closing"
    PEER_CLOSED = "peer Closed"
    PEER_RECONFIGURING = "peer Reconfiguring"
    PEER_RECONFIGURED = "peer Reconfigured"
    PEER_VANISHED = "peer vanished"  # the peer's state node (or its whole directory) is gone
    DETACHED = "detached"  # our own directory is gone, or the driver drops the device
    OFFLINE = "offline"  # the toolstack wrote online=0 (xl network-detach)
    FATAL = "fatal"  # our own fatal error (xenbus_dev_fatal)
    CLOSE = "close"  # the driver's user asks for an orderly close
    RECONNECT = "reconnect"  # the driver's user asks to connect again after Closed
    RELEASED = "released"  # @releaseDomain: the peer's domain is gone

    @classmethod
    def peer(cls, state: XenbusState) -> Event:
        return _PEER[state]


_PEER = {s: Event[f"PEER_{s.name.upper()}"] for s in XenbusState}

# The peer's own states, in enum order, then everything else: the order rows are listed in.
EVENT_ORDER = list(Event)


@dataclass(frozen=True)
class Row:
    effects: tuple[enum.Enum, ...]  # actions and XenbusState writes, in order
    why: str  # one line for the reference table
    to: XenbusState | None = None  # the next state when it is not the last write


@dataclass(frozen=True)
class Transition:
    own: XenbusState
    event: Event
    effects: tuple[enum.Enum, ...]
    next: XenbusState
    why: str

    @property
    def writes(self) -> tuple[XenbusState, ...]:
        return tuple(e for e in self.effects if isinstance(e, XenbusState))

    @property
    def actions(self) -> tuple[enum.Enum, ...]:
        return tuple(e for e in self.effects if not isinstance(e, XenbusState))


Table = Mapping[tuple[XenbusState, Event], Row]


def row(*effects: enum.Enum, why: str, to: XenbusState | None = None) -> Row:
    return Row(tuple(effects), why, to)


def step(table: Table, own: XenbusState, event: Event) -> Transition | None:
    """The transition for ``event`` in state ``own``, or None: not in the table, refused."""
    r = table.get((own, event))
    if r is None:
        return None
    writes = [e for e in r.effects if isinstance(e, XenbusState)]
    nxt = r.to if r.to is not None else (writes[-1] if writes else own)
    return Transition(own, event, r.effects, nxt, r.why)


def transitions(table: Table) -> list[Transition]:
    """Every row, in state order then event order: the order the reference lists them in."""
    out = []
    for own, event in sorted(table, key=lambda k: (int(k[0]), EVENT_ORDER.index(k[1]))):
        t = step(table, own, event)
        assert t is not None
        out.append(t)
    return out


def _effects(t: Transition) -> str:
    parts = [f"→{e.name}" if isinstance(e, XenbusState) else str(e.value) for e in t.effects]
    return ", ".join(parts) if parts else "—"


def render_text(table: Table) -> str:
    """The table as fixed-width text, for a module docstring."""
    rows = [(t.own.name, str(t.event.value), _effects(t), t.next.name) for t in transitions(table)]
    head = ("state", "event", "effects", "next")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = []
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(table: Table, title: str, actions: Mapping[enum.Enum, str]) -> str:
    """The table as a markdown section: the protocol reference in docs/handshake.md."""
    out = [f"## {title}", "", "| state | event | effects | next | why |", "| --- | --- | --- | --- | --- |"]
    for t in transitions(table):
        out.append(f"| {t.own.name} | {t.event.value} | {_effects(t)} | {t.next.name} | {t.why} |")
    out += ["", "Actions:", ""]
    for a, doc in actions.items():
        out.append(f"- `{a.value}`: {doc}")
    return "\n".join(out) + "\n"


def reaches_closed(table: Table, start: XenbusState) -> bool:
    """Closed can be reached from ``start`` through the table's rows."""
    seen, todo = {start}, [start]
    while todo:
        s = todo.pop()
        if s == XenbusState.Closed:
            return True
        for (own, event), _r in table.items():
            if own == s:
                t = step(table, own, event)
                assert t is not None
                if t.next not in seen:
                    seen.add(t.next)
                    todo.append(t.next)
    return False


class Runner:
    """Performs one end's transitions on its ``XenbusDevice``: the one place a refusal is
    logged and counted and a failing effect turns into FATAL.

    ``perform(action, message, reason)`` does one action; ``refused()`` bumps the end's
    counter; ``errors`` are what an action may raise when the peer or the store misbehaves.
    While handling FATAL or DETACHED a state write that fails is not news (our directory may
    be gone): the state is kept locally and teardown goes on.
    """

    def __init__(
        self,
        name: str,
        table: Table,
        dev: XenbusDevice,
        perform: Callable[[enum.Enum, str, str], None],
        refused: Callable[[], None],
        errors: tuple[type[Exception], ...],
    ) -> None:
        self.name = name
        self.table = table
        self.dev = dev
        self._perform = perform
        self._refused = refused
        self._errors = errors

    def handle(self, event: Event, message: str = "", reason: str = "handshake") -> Transition | None:
        own = self.dev.state
        t = step(self.table, own, event)
        if t is None:
            self._refused()
            log.error(
                "%s: handshake: %s in state %s is not in the table: refused", self.name, event, own.name
            )
            return None
        failing = event in (Event.FATAL, Event.DETACHED)
        try:
            for effect in t.effects:
                if isinstance(effect, XenbusState):
                    self.dev.switch_state(effect, quiet=failing)
                else:
                    self._perform(effect, message, reason)
        except self._errors as exc:
            if failing:  # an action broke mid-teardown: say so, never loop on FATAL
                log.error("%s: handshake: %s while handling %s", self.name, exc, event)
                return t
            self.handle(Event.FATAL, f"handshake: {exc}", "handshake")
            return t
        if t.next != (t.writes[-1] if t.writes else own) and self.dev.state != t.next:
            self.dev.set_local(t.next)  # a row that ends somewhere it cannot write (directory gone)
        return t
