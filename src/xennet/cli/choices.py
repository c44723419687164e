"""Every choice the commands offer, taken from the registry that owns it, so a policy or mode
added there reaches the command line with no change here."""

from __future__ import annotations

from typing import Any, get_args, get_type_hints

import click

from ..abi import netif
from ..netback.rxpolicy import ADMISSION_POLICIES, PACKING_POLICIES
from ..netback.tx import TxLimits
from ..netfront.slotpolicy import policy_names
from ..netfront.tx import Grants
from ..ports.pktgen import PRESETS, TrafficSpec
from ..world.pktgen_run import PktgenJob


def literal_values(cls: type, field: str) -> tuple[str, ...]:
    """The values of a dataclass field typed ``Literal[...]``, as command-line strings."""
    return tuple(str(v) for v in get_args(get_type_hints(cls)[field]))


SLOT_POLICIES: tuple[str, ...] = tuple(policy_names())
PACKINGS: tuple[str, ...] = tuple(PACKING_POLICIES)
ADMISSIONS: tuple[str, ...] = tuple(ADMISSION_POLICIES)
TX_DATA: tuple[str, ...] = literal_values(TxLimits, "data")
GRANTS: tuple[str, ...] = tuple(get_args(Grants))
LAYOUT_PRESETS: tuple[str, ...] = PRESETS
IP_VERSIONS: tuple[str, ...] = literal_values(TrafficSpec, "ip")
PROTOS: tuple[str, ...] = literal_values(TrafficSpec, "proto")
DIRECTIONS: tuple[str, ...] = literal_values(PktgenJob, "direction")
OFFLOADS = ("1", "0")  # a flag, written as xl writes one
GRO = ("1", "0")
GSO_TYPES: dict[str, int] = {  # --gso KIND:MSS
    "tcpv4": netif.XEN_NETIF_GSO_TYPE_TCPV4,
    "tcpv6": netif.XEN_NETIF_GSO_TYPE_TCPV6,
}

# the vif options (xl-style key=value) whose values are a choice
VIF_CHOICES: dict[str, tuple[str, ...]] = {
    "policy": SLOT_POLICIES,
    "packing": PACKINGS,
    "admission": ADMISSIONS,
    "data": TX_DATA,
    "offloads": OFFLOADS,
    "gro": GRO,
    "grants": GRANTS,
}


def choice(values: tuple[str, ...]) -> click.Choice[Any]:
    return click.Choice(list(values))


def one_of(values: tuple[str, ...]) -> str:
    """``a|b|c``, for help texts."""
    return "|".join(values)
