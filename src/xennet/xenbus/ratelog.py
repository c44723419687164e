"""Log lines a peer can cause, at most one per kind every few seconds: a hostile peer must
not flood the log (its counters still count every event)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable


class RateLimitedLog:
    """At most one line per ``key`` every ``interval_s`` (a peer must not flood the log);
    the next line says how many were held back."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}  # keys come from a fixed set: bounded
        self._held: Counter[str] = Counter()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] += 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        suffix = f" ({held} more like this not logged)" if held else ""
        self.logger.warning(msg + suffix, *args)
