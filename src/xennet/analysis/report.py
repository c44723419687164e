"""``xennet report``: every tx policy and rx packing over a traffic mix, as a table and plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..netfront.slotpolicy.policies import policy_names
from ..ports.pktgen import preset_layouts
from .layout import RX_PACKINGS, analyze

FAMILIES = ("worst", "random", "cork", "linear")
TX_POLICIES = tuple(policy_names())  # every policy netfront can be configured with


@dataclass
class FamilyStats:
    packets_in: int = 0
    over_limit: int = 0
    dropped: int = 0
    packets_out: int = 0
    slots: int = 0
    bytes_copied: int = 0
    bytes_in: int = 0


def run_report(count: int, seed: int, mss: int, max_slots: int = 18) -> dict[str, Any]:
    tx: dict[str, dict[str, FamilyStats]] = defaultdict(lambda: defaultdict(FamilyStats))
    rx: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for family in FAMILIES:
        n = 1 if family == "worst" else count
        for layout in preset_layouts(family, n, seed):
            a = analyze(layout, (1, mss) if mss else None, max_slots)
            for name in TX_POLICIES:
                r = a["strategies"][name]
                st = tx[name][family]
                st.packets_in += 1
                st.bytes_in += a["length"]
                st.over_limit += a["tx_slots"] > max_slots
                st.dropped += r["dropped"]
                st.packets_out += r["packets"]
                st.slots += sum(r["slots"])
                st.bytes_copied += r["bytes_copied"]
            for name in RX_PACKINGS:
                rx[name][family].append(a["rx"][name]["slots"])
                if a["rx"][name]["estimate"] != a["rx"][name]["slots"]:
                    raise AssertionError(f"rx {name}: estimate != slots for {layout}")
    return {
        "count": count,
        "seed": seed,
        "mss": mss,
        "max_slots": max_slots,
        "tx": {p: {f: vars(s) for f, s in fams.items()} for p, fams in tx.items()},
        "rx": {
            p: {f: {"mean_slots": statistics.fmean(v), "max_slots": max(v)} for f, v in fams.items()}
            for p, fams in rx.items()
        },
    }


def write_report(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json"]
    files[0].write_text(json.dumps(data, indent=2))
    width = 0.8 / len(TX_POLICIES)  # the bars of one family share 0.8 of its slot
    for metric, ylabel, fname in (
        ("bytes_copied", "bytes copied per packet", "bytes_copied.png"),
        ("slots", "ring slots per packet", "slots.png"),
    ):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, pol in enumerate(TX_POLICIES):
            ys = []
            for fam in FAMILIES:
                st = data["tx"][pol][fam]
                ys.append(st[metric] / max(st["packets_in"], 1))
            centre = i - (len(TX_POLICIES) - 1) / 2
            ax.bar([x + centre * width for x in range(len(FAMILIES))], ys, width, label=pol)
        ax.set_xticks(range(len(FAMILIES)), FAMILIES)
        ax.set_ylabel(ylabel)
        ax.set_title(f"netfront too-many-slots policies (limit {data['max_slots']} slots)")
        ax.legend()
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, pack in enumerate(RX_PACKINGS):
        ys = [data["rx"][pack][f]["mean_slots"] for f in FAMILIES]
        ax.bar([x + (i - 0.5) * 0.35 for x in range(len(FAMILIES))], ys, 0.35, label=pack)
    ax.set_xticks(range(len(FAMILIES)), FAMILIES)
    ax.set_ylabel("rx slots per packet")
    ax.set_title("guest rx packing")
    ax.legend()
    fig.tight_layout()
    path = out / "rx_slots.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    return files
