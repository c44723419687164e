"""One end of a xenbus device: our node, the other end's node, state switching and errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..xenstore.errors import XenstoreError
from .handshake import Event
from .states import XenbusState

if TYPE_CHECKING:
    from ..xenstore.client import Transaction, XenstoreClient

log = logging.getLogger(__name__)


class HandshakeError(Exception):
    """The peer's xenstore keys are missing or garbage; the device cannot connect."""


@dataclass
class XenbusDevice:
    xs: XenstoreClient
    nodename: str  # our directory
    otherend: str = ""  # the peer's directory
    state: XenbusState = XenbusState.Unknown
    transitions: list[XenbusState] = field(default_factory=list)

    def adopt_state(self, state: XenbusState) -> None:
        """Take the state the toolstack wrote as our starting point."""
        self.state = state
        self.transitions = [state]

    def switch_state(self, state: XenbusState, *, quiet: bool = False) -> None:
        """Write our state.  ``quiet``: we are failing or detached and our directory may be
        gone; a write that fails then keeps the state locally instead of raising."""
        if state == self.state:
            return
        node = f"{self.nodename}/state"

        def write(t: Transaction) -> bool:
            # as Linux's xenbus_switch_state: a plain write after a toolstack detach would
            # create our directory again, and that orphan would never be removed
            try:
                if t.try_read(node) is None:
                    return False
            except XenstoreError as exc:
                if exc.errno_name == "EACCES":  # our parents are gone too
                    return False
                raise
            t.write(node, str(int(state)))
            return True

        try:
            if not self.xs.run_transaction(write):
                log.debug("%s: gone; state %s kept locally", self.nodename, state.name)
        except XenstoreError:
            if not quiet:
                raise
            log.debug("%s: cannot write state %s", self.nodename, state.name, exc_info=True)
        self.set_local(state)

    def set_local(self, state: XenbusState) -> None:
        """Our state changed where we cannot (or must not) write it: the directory is gone."""
        self.state = state
        self.transitions.append(state)

    def peer_event(self) -> Event:
        """What the other end's ``state`` node says now, as a handshake event."""
        if not self.otherend:
            return Event.PEER_VANISHED
        try:
            raw = self.xs.try_read(f"{self.otherend}/state")
        except XenstoreError as exc:
            # xenstored answers EACCES, not ENOENT, once the directory and the parents we
            # could read are gone: either way the other end has vanished.
            if exc.errno_name == "EACCES":
                return Event.PEER_VANISHED
            raise
        return Event.PEER_VANISHED if raw is None else Event.peer(XenbusState.parse(raw))

    def gone(self) -> bool:
        """Our own directory has been removed (a toolstack detach)."""
        try:
            return self.xs.try_read(f"{self.nodename}/state") is None
        except XenstoreError as exc:
            if exc.errno_name == "EACCES":
                return True
            raise

    def read(self, key: str) -> str | None:
        return self.xs.try_read(f"{self.nodename}/{key}")

    def read_other(self, key: str) -> str | None:
        return self.xs.try_read(f"{self.otherend}/{key}")

    def read_other_int(
        self, key: str, default: int | None = None, *, lo: int = 0, hi: int = 2**32 - 1
    ) -> int:
        """An integer the peer wrote, range-checked; missing → default or HandshakeError."""
        raw = self.read_other(key)
        if raw is None:
            if default is None:
                raise HandshakeError(f"{self.otherend}/{key} is missing")
            return default
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise HandshakeError(f"{self.otherend}/{key} = {raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise HandshakeError(f"{self.otherend}/{key} = {value} is outside {lo}..{hi}")
        return value

    def other_feature(self, key: str) -> bool:
        """A ``feature-*`` flag: anything but a clean 0/1 counts as absent."""
        return (self.read_other(key) or "").strip() == "1"

    def record_error(self, message: str) -> None:
        """The first half of xenbus_dev_fatal: log once, record the error in xenstore."""
        log.error("%s: %s", self.nodename, message)

        def write(t: Transaction) -> None:
            if t.try_read(f"{self.nodename}/state") is not None:  # never recreate a removed directory
                t.write(f"{self.nodename}/error", message[:1000])

        try:
            self.xs.run_transaction(write)
        except Exception:  # the store itself may be what failed
            log.debug("could not record error for %s", self.nodename, exc_info=True)
