"""Counters of one netfront: every drop has a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NetfrontStats:
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_completed: int = 0
    tx_errors: Counter[str] = field(default_factory=Counter)  # reason -> count
    tx_queue_stopped: int = 0
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_errors: Counter[str] = field(default_factory=Counter)
    rx_buffers_posted: int = 0
    notifications_sent: int = 0
    events: int = 0
    spurious_events: int = 0
    grants_held_by_peer: int = 0  # grants the backend still maps after teardown (XSA-396): not reused

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
