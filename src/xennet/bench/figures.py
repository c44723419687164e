"""Figures: the runs of one measurement, and what a report says about them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Figure:
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    def add(self, v: float) -> None:
        self.values.append(float(v))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    @property
    def min(self) -> float:
        return min(self.values) if self.values else 0.0

    @property
    def max(self) -> float:
        return max(self.values) if self.values else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "runs": list(self.values),
            **({"note": self.note} if self.note else {}),
        }


def ratio(a: Figure, b: Figure) -> float:
    """Median of a over median of b (0 when b has none)."""
    return a.median / b.median if b.median else 0.0
