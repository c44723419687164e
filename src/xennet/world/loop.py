"""A domain's event loop: wait on the event-channel and xenstore descriptors, dispatch to the driver."""

from __future__ import annotations

import logging
import selectors
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..platform.base import Platform, PlatformError
from ..xenstore.client import XenstoreClient

log = logging.getLogger(__name__)


class Driver(Protocol):
    def on_watch(self, path: str, token: str) -> None: ...


class DomainLoop:
    """Single-threaded: the order in which work is dispatched is fixed, so a run is repeatable."""

    def __init__(
        self,
        platform: Platform,
        xs: XenstoreClient,
        on_watch: Callable[[str, str], None],
        on_event: Callable[[int], None],
    ) -> None:
        self.platform = platform
        self.xs = xs
        self.on_watch = on_watch
        self.on_event = on_event
        self._sel = selectors.DefaultSelector()
        self._sel.register(platform.evtchn.fileno(), selectors.EVENT_READ, "evtchn")
        self._sel.register(xs.fileno(), selectors.EVENT_READ, "xenstore")
        self._readers: dict[int, Callable[[], None]] = {}

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Also wait on ``fd`` (a TAP, a socket); ``callback`` runs when it is readable."""
        self._sel.register(fd, selectors.EVENT_READ, "port")
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._sel.unregister(fd)

    def poll(self) -> int:
        """Dispatch whatever is ready now, without blocking.  Returns how many items were handled."""
        handled = 0
        for path, token in self.xs.read_watch_events(0):
            self.on_watch(path, token)
            handled += 1
        for port in self.platform.evtchn.pending():
            self.on_event(port)
            handled += 1
            try:
                self.platform.evtchn.unmask(port)
            except PlatformError:
                pass  # the handler closed the port (teardown): nothing to unmask
        return handled

    def run_once(self, timeout: float | None) -> int:
        handled = self.poll()
        if handled:
            timeout = 0
        for key, _ in self._sel.select(timeout):
            cb = self._readers.get(key.fd)  # type: ignore[call-overload]
            if cb is not None:
                cb()
                handled += 1
        return handled + self.poll()

    def close(self) -> None:
        self._sel.close()


def shut_down_netfront(front: Any, loop: DomainLoop, timeout_s: float = 10.0) -> None:
    """Close a netfront in order: Closing, wait for Closed, then give a backend that was slow
    (or died and was reaped) the same time to let go of our grants, and stop watching."""
    from ..xenbus.states import XenbusState

    front.close()
    end = time.monotonic() + timeout_s
    while front.dev.state != XenbusState.Closed and time.monotonic() < end:
        loop.run_once(0.05)
    while front.pending_revoke and front.retry_revoke() and time.monotonic() < end:
        loop.run_once(0.05)
    front.stop_watching()
