"""The data plane's batch kernels, twice: a compiled core and its pure-Python twin.

``kernels`` is one of them, chosen once at import:

* ``XENNET_PURE=1`` selects the twin (``core/pure/``), the readable reference;
* otherwise the compiled core (``xennet.core._native``, built from ``core/native/`` by
  ``pip install``).  If it was not built, the twin runs and ``unavailable`` says why:
  the CLI prints that once.  With ``XENNET_REQUIRE_NATIVE=1`` (CI) a missing compiled core
  is an error instead.

Nothing above this package asks which core runs; ``CORE`` is for reports and benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from . import pure as _pure

_MARKER = Path(__file__).with_name("_native_build_error.txt")


class CoreUnavailable(ImportError):
    """The compiled core was required (XENNET_REQUIRE_NATIVE=1) and is not there."""


def _load() -> tuple[ModuleType, str, str]:
    """(kernels, "compiled" | "pure", why the compiled core is not running, or "")."""
    if os.environ.get("XENNET_PURE", "") not in ("", "0"):
        return _pure, "pure", "XENNET_PURE is set"
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError as exc:
        why = _MARKER.read_text().strip() if _MARKER.exists() else f"not importable: {exc}"
        if os.environ.get("XENNET_REQUIRE_NATIVE", "") not in ("", "0"):
            raise CoreUnavailable(f"the compiled core is required and missing: {why}") from exc
        return _pure, "pure", f"the compiled core was not built ({why})"
    missing = [k for k in _pure.KERNELS if not hasattr(_native, k)]
    if missing:
        raise CoreUnavailable(f"the compiled core lacks {missing}: rebuild it (pip install -e .)")
    return _native, "compiled", ""


if TYPE_CHECKING:
    from . import pure as kernels

    CORE: str
    unavailable: str
else:
    kernels, CORE, unavailable = _load()

__all__ = ["CORE", "CoreUnavailable", "kernels", "unavailable"]
