"""Run one kernel on both cores with identical copies of its arguments, and compare
(``xennet.fuzz.both``: the differential fuzzer uses the same comparison)."""

from __future__ import annotations

import pytest

from xennet.fuzz.both import _native, both

needs_native = pytest.mark.skipif(_native is None, reason="the compiled core is not built")

__all__ = ["both", "needs_native"]
