"""xl-style ``key=value`` vif options, parsed and checked into the two drivers' configurations."""

from __future__ import annotations

from dataclasses import dataclass

import click

from ..netback.interface import NetbackConfig
from ..netback.tx import TxLimits
from ..netfront.device import NetfrontConfig
from ..xenbus.toolstack import VifSpec
from .choices import VIF_CHOICES

VIF_KEYS = ("mac", "mtu", "queues", *VIF_CHOICES, "poll_us", "tx_batch")


def vif_help(*keys: str) -> str:
    """The choice-valued keys (``keys``, or all) as ``key=a|b|c``, for the commands' help."""
    return ", ".join(f"{key}={'|'.join(VIF_CHOICES[key])}" for key in keys or VIF_CHOICES)


def vif_options(specs: tuple[str, ...]) -> dict[str, str]:
    """xl-style ``key=value`` vif options."""
    out: dict[str, str] = {}
    for spec in specs:
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in VIF_KEYS:
                raise click.BadParameter(f"{item!r}: want key=value with key one of {', '.join(VIF_KEYS)}")
            out[key] = value.strip()
    return out


@dataclass(frozen=True)
class Drivers:
    mac: str
    mtu: int
    offloads: bool
    front: NetfrontConfig
    back: NetbackConfig
    poll_us: int = 0


def vif_config(specs: tuple[str, ...]) -> tuple[dict[str, str], Drivers]:
    """Parse and check xl-style vif options into the two drivers' configurations."""
    o = vif_options(specs)
    try:
        mtu = int(o.get("mtu", "1500"))
        queues = int(o.get("queues", "1"))
        VifSpec(mac=o.get("mac", "00:16:3e:00:00:01"), mtu=mtu)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if queues != 1:
        raise click.BadParameter("queues: only queues=1 is built so far", param_hint="queues=")
    poll = o.get("poll_us", "0")
    if not poll.isdigit() or int(poll) > 1_000_000:
        raise click.BadParameter(f"poll_us={poll}: microseconds, 0 to 1000000", param_hint="poll_us=")
    for key, allowed in VIF_CHOICES.items():
        if key in o and o[key] not in allowed:
            raise click.BadParameter(f"{key}={o[key]}: choose one of {', '.join(allowed)}")
    batch = o.get("tx_batch", str(TxLimits.batch_slots))
    try:
        limits = TxLimits(data=o.get("data", "copy"), batch_slots=int(batch))  # type: ignore[arg-type]
    except ValueError as exc:  # a data= choice is checked above: this is tx_batch
        raise click.BadParameter(f"tx_batch={batch}: ring entries a pass answers, 1..256 ({exc})") from None
    return o, Drivers(
        mac=o.get("mac", "00:16:3e:00:00:01").lower(),
        mtu=mtu,
        offloads=o.get("offloads", "1") == "1",
        front=NetfrontConfig(
            slot_policy=o.get("policy", "linearize"),
            grants=o.get("grants", "pool"),  # type: ignore[arg-type]  # checked above
            gro=o.get("gro", "1") == "1",
        ),
        back=NetbackConfig(
            tx_limits=limits,
            rx_packing=o.get("packing", "full"),
            rx_admission=o.get("admission", "fit-or-wait"),
        ),
        poll_us=int(poll),
    )
