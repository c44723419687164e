"""Counters of one netback vif: every drop and every disconnect has a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class VifStats:
    tx_packets: int = 0  # guest -> backend
    tx_bytes: int = 0
    tx_errors: Counter[str] = field(default_factory=Counter)
    tx_slots: int = 0  # data slots of the packets passed up (extra-info slots not counted)
    tx_gso_packets: int = 0  # packets that came with a GSO extra
    rx_packets: int = 0  # backend -> guest
    rx_bytes: int = 0
    rx_dropped: Counter[str] = field(default_factory=Counter)
    rx_queue_peak: int = 0
    mcast_ops: int = 0
    tx_overflow_bytes: int = 0
    tx_unshared_bytes: int = 0  # mapped data copied at disconnect: another guest still queued it
    rx_bytes_staged: int = 0  # bytes copied to the guest out of backend memory (not by grant A->B)
    rx_bytes_forwarded: int = 0  # bytes copied straight from another guest's grant (seed 003)
    rx_slots: int = 0
    rx_gso_packets: int = 0  # packets delivered with a GSO extra
    rx_waits: int = 0  # a packet did not fit the posted buffers: wait for the guest to post more
    rx_repacked: int = 0  # plans over the netfront's 18-slot limit, redone with `full` packing
    rx_stalls: int = 0  # queues dropped because the guest stopped posting buffers (XSA-392)
    grant_copy_ops: int = 0
    grant_copy_batches: int = 0
    notifications_sent: int = 0
    events: int = 0
    spurious_events: int = 0
    fatal: Counter[str] = field(default_factory=Counter)  # why the frontend was disconnected
    handshake_refused: int = 0  # (state, event) pairs not in netback/handshake.py's table

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
