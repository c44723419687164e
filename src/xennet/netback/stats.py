"""Counters of one netback vif: every drop and every disconnect has a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class VifStats:
    tx_packets: int = 0  # guest -> backend
    tx_bytes: int = 0
    tx_errors: Counter[str] = field(default_factory=Counter)
    rx_packets: int = 0  # backend -> guest
    rx_bytes: int = 0
    rx_dropped: Counter[str] = field(default_factory=Counter)
    rx_queue_peak: int = 0
    grant_copy_ops: int = 0
    grant_copy_batches: int = 0
    notifications_sent: int = 0
    events: int = 0
    spurious_events: int = 0
    fatal: Counter[str] = field(default_factory=Counter)  # why the frontend was disconnected

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
