"""``enum xenbus_state`` (xen/io/xenbus.h)."""

from __future__ import annotations

import enum


class XenbusState(enum.IntEnum):
    Unknown = 0
    Initialising = 1
    InitWait = 2
    Initialised = 3
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8

    @classmethod
    def parse(cls, raw: str | None) -> XenbusState:
        """A peer's ``state`` node; anything missing or garbage reads as Unknown."""
        if raw is None:
            return cls.Unknown
        try:
            return cls(int(raw.strip()))
        except ValueError:
            return cls.Unknown
