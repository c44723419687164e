"""Too-many-slots policies for netfront tx, the relayout planner and slot accounting."""

from .planner import Copied, Kept, NoPlan, RelayoutPlan, relayout_plan
from .policies import (
    DropPolicy,
    LinearizePolicy,
    PolicyOutcome,
    RelayoutPolicy,
    SegmentPolicy,
    TooManySlotsPolicy,
    UnknownPolicy,
    policy_for,
    policy_names,
)
from .slots import bounce, count_slots, fits, needs_bounce

__all__ = [
    "Copied",
    "DropPolicy",
    "Kept",
    "LinearizePolicy",
    "NoPlan",
    "PolicyOutcome",
    "RelayoutPlan",
    "RelayoutPolicy",
    "SegmentPolicy",
    "TooManySlotsPolicy",
    "UnknownPolicy",
    "bounce",
    "count_slots",
    "fits",
    "needs_bounce",
    "policy_for",
    "policy_names",
    "relayout_plan",
]
