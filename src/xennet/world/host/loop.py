"""A domain's event loop: wait on the event-channel and xenstore descriptors, dispatch to the driver."""

from __future__ import annotations

import logging
import selectors
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ...platform.base import Platform, PlatformError
from ...xenstore.client import XenstoreClient

if TYPE_CHECKING:
    from ...netback.backend import Netback
    from ...netback.interface import Vif
    from ...netfront.device import Netfront
    from ...packet.skb import Skb

log = logging.getLogger(__name__)


class Driver(Protocol):
    def on_watch(self, path: str, token: str) -> None: ...


def frontend_events(front: Netfront, take: Callable[[Skb], None]) -> Callable[[int], None]:
    """A guest program's ``on_event``: each skb the event brings goes to ``take``, then is
    released (``take`` must not keep it)."""

    def on_event(port: int) -> None:
        for skb in front.on_event(port):
            try:
                take(skb)
            finally:
                skb.release()

    return on_event


def backend_events(back: Netback, take: Callable[[Vif, Skb], None]) -> Callable[[int], None]:
    """A driver domain program's ``on_event``: the vif behind the port, and each skb it
    received, go to ``take``; the skb is released after."""

    def on_event(port: int) -> None:
        vif = back.vif_for_port(port)
        if vif is None:
            return
        for skb in vif.on_event(port):
            try:
                take(vif, skb)
            finally:
                skb.release()

    return on_event


class DomainLoop:
    """Single-threaded: the order in which work is dispatched is fixed, so a run is repeatable.

    A wake-up does only what is pending: the descriptors that ``select`` says are ready.  With
    ``poll_us`` (Linux's ``busy_poll``) it first spins that long on ``idle`` -- the driver
    looking at its rings without a system call -- before it sleeps.
    """

    def __init__(
        self,
        platform: Platform,
        xs: XenstoreClient,
        on_watch: Callable[[str, str], None],
        on_event: Callable[[int], None],
        *,
        idle: Callable[[], bool] | None = None,
        poll_us: int = 0,
    ) -> None:
        self.platform = platform
        self.xs = xs
        self.on_watch = on_watch
        self.on_event = on_event
        self.idle = idle
        self.poll_us = poll_us
        self._sel = selectors.DefaultSelector()
        self._evtchn_fd = platform.evtchn.fileno()
        self._xs_fd = xs.fileno()
        self._sel.register(self._evtchn_fd, selectors.EVENT_READ, "evtchn")
        self._sel.register(self._xs_fd, selectors.EVENT_READ, "xenstore")
        self._readers: dict[int, Callable[[], None]] = {}
        self.busy_hits = 0  # wake-ups the busy poll found work for

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Also wait on ``fd`` (a TAP, a socket); ``callback`` runs when it is readable."""
        self._sel.register(fd, selectors.EVENT_READ, "port")
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._sel.unregister(fd)

    def _watches(self) -> int:
        events = self.xs.read_watch_events(0)
        for path, token in events:
            self.on_watch(path, token)
        return len(events)

    def _events(self) -> int:
        ports = self.platform.evtchn.pending()
        for port in ports:
            self.on_event(port)
            try:
                self.platform.evtchn.unmask(port)
            except PlatformError:
                pass  # the handler closed the port (teardown): nothing to unmask
        return len(ports)

    def poll(self) -> int:
        """Dispatch whatever is ready now, without blocking.  Returns how many items were handled."""
        return self._watches() + self._events()

    def run_once(self, timeout: float | None) -> int:
        """Wait up to ``timeout`` for something to do, and do it.  Returns items handled."""
        handled = 0
        ready = None
        if self.poll_us and timeout != 0:
            # busy poll: the rings (no system call) and the descriptors (select with no wait),
            # until something is there or the window closes -- then sleep as usual
            end = time.perf_counter() + self.poll_us / 1e6
            while True:
                if self.idle is not None and self.idle():
                    self.busy_hits += 1
                    handled += 1
                    timeout = 0
                    break
                ready = self._sel.select(0)
                if ready or time.perf_counter() >= end:
                    if ready:
                        self.busy_hits += 1
                    break
        for key, _ in ready if ready else self._sel.select(timeout):
            if key.data == "evtchn":
                handled += self._events()
            elif key.data == "xenstore":
                handled += self._watches()
            else:
                cb = self._readers.get(key.fd)  # type: ignore[call-overload]
                if cb is not None:
                    cb()
                    handled += 1
        return handled

    def close(self) -> None:
        self._sel.close()


def shut_down_netfront(front: Any, loop: DomainLoop, timeout_s: float = 10.0) -> None:
    """Close a netfront in order: Closing, wait for Closed, then give a backend that was slow
    (or died and was reaped) the same time to let go of our grants, and stop watching."""
    from ...xenbus.states import XenbusState

    front.close()
    end = time.monotonic() + timeout_s
    while front.dev.state != XenbusState.Closed and time.monotonic() < end:
        loop.run_once(0.05)
    while front.pending_revoke and front.retry_revoke() and time.monotonic() < end:
        loop.run_once(0.05)
    front.stop_watching()
