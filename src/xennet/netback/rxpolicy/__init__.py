"""Guest-RX policies (seeds 004, 002, 003), all pure: how a packet is packed into the rx
buffers the guest posted (``packing``), when it may be queued or put on the ring
(``admission``).  The grant copies that carry a plan out are built by the core kernel
``netback_rx_plan`` (``core/pure/netback_rx.py``) from ``netback.rx.skb_pieces``."""

from .admission import (
    ADMISSION_POLICIES,
    Admission,
    AdmissionPolicy,
    EstimateAdmission,
    FitOrWaitAdmission,
    admission_policy,
)
from .packing import (
    PACKING_POLICIES,
    FullPacking,
    PackingPolicy,
    SeedPacking,
    check_packing,
    packing_policy,
)
from .plan import RX_BUFFER_SIZE, Chunk, PlanError, RxPlan, check_plan
from .seed_original import SeedBug, seed_original_count

__all__ = [
    "ADMISSION_POLICIES",
    "PACKING_POLICIES",
    "RX_BUFFER_SIZE",
    "Admission",
    "AdmissionPolicy",
    "Chunk",
    "EstimateAdmission",
    "FitOrWaitAdmission",
    "FullPacking",
    "PackingPolicy",
    "PlanError",
    "RxPlan",
    "SeedBug",
    "SeedPacking",
    "admission_policy",
    "check_packing",
    "check_plan",
    "packing_policy",
    "seed_original_count",
]
