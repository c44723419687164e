"""Counters of one netfront: every drop has a reason."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field


class Drop(enum.StrEnum):
    """netfront's own reasons to drop (the kernels' are ``RxError``/``TxError``)."""

    DEVICE_BROKEN = "device_broken"  # rx: built in the poll that found the ring impossible
    UNCONSUMED_AT_CLOSE = (
        "unconsumed_at_close"  # rx: responses (slots) never read; tx: packets never answered
    )
    BACKEND_KEPT_MAPPING = "backend_kept_mapping"  # rx: an extra-info slot's grant (its packet went on)


@dataclass
class NetfrontStats:
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_completed: int = 0
    tx_rsp_null: int = 0  # NULL responses skipped: one per extra-info slot we posted, or the backend's doing
    tx_errors: Counter[str] = field(default_factory=Counter)  # reason -> count
    tx_queue_stopped: int = 0
    tx_slots: int = 0
    tx_gso_packets: int = 0  # sent with a GSO extra (the backend segments them)
    tx_soft_gso: int = 0
    tx_soft_csum: int = 0  # checksums completed here: the backend did not offer csum_blank for them
    tx_bounced: int = 0
    tx_bytes_copied: int = 0  # by bounces, linearization and slot policies
    tx_policy: Counter[str] = field(default_factory=Counter)  # "<policy>:<outcome>" -> count
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_errors: Counter[str] = field(default_factory=Counter)
    rx_buffers_posted: int = 0
    rx_slots: int = 0
    rx_slots_dropped: int = 0  # slots (data and extra) of packets dropped with an rx error
    rx_gso_packets: int = 0  # arrived with a GSO extra
    rx_gso_checksum_fixup: int = 0  # ... without csum_blank: made partial, as Linux does
    notifications_sent: int = 0
    events: int = 0
    spurious_events: int = 0
    handshake_refused: int = 0  # (state, event) pairs not in netfront/handshake.py's table
    grants_held_by_peer: int = 0  # grants the backend still maps after teardown (XSA-396): not reused

    def record_policy(self, name: str, outcome: object) -> None:
        """Account one packet that went through the too-many-slots policy."""
        dropped = bool(getattr(outcome, "dropped", False))
        self.tx_policy[f"{name}:{'dropped' if dropped else 'applied'}"] += 1
        self.tx_policy[f"{name}:packets_out"] += len(getattr(outcome, "skbs", []))
        copied = int(getattr(outcome, "bytes_copied", 0))
        self.tx_policy[f"{name}:bytes_copied"] += copied
        self.tx_bytes_copied += copied

    def as_dict(self) -> dict[str, object]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
