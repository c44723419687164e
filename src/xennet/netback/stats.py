"""Counters of one netback vif: every drop and every disconnect has a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from ..abi.grant_table import GNTST_NAMES

GrantOp = Literal["grant_copy", "map"]
# Every counter key a failed grant operation can produce: a fixed set, whatever status the
# hypervisor (or a guest's bad ref) brings.  The details (ref, domain) go to the log.
GRANT_ERROR_KEYS: frozenset[str] = frozenset(
    f"{op}: {name}" for op in ("grant_copy", "map") for name in [*GNTST_NAMES.values(), "unknown status"]
)


def grant_error_key(op: GrantOp, status: int | None) -> str:
    """The counter key of a failed grant ``op`` with GNTST ``status`` (None: not known)."""
    name = GNTST_NAMES.get(status, "unknown status") if status else "unknown status"
    return f"{op}: {name}"


@dataclass
class VifStats:
    tx_packets: int = 0  # guest -> backend
    tx_bytes: int = 0
    tx_errors: Counter[str] = field(default_factory=Counter)
    tx_slots: int = 0  # data slots of the packets passed up (extra-info slots not counted)
    tx_gso_packets: int = 0  # packets that came with a GSO extra
    tx_gso_checksum_fixup: int = 0  # ... without csum_blank: made partial, as Linux does
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
    rx_soft_csum: int = 0  # checksums completed here: the frontend does not take csum_blank for them
    rx_csum_unparseable: int = 0  # ... that could not be completed: sent without csum_blank
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
