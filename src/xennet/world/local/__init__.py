"""The deterministic in-process world: every domain in one process, the same protocol code,
for unit and property tests."""

from .world import BACKEND, GUEST, LocalWorld

__all__ = ["BACKEND", "GUEST", "LocalWorld"]
