"""Run one kernel on both cores with identical copies of its arguments, and compare."""

from __future__ import annotations

import copy
from typing import Any

from xennet.core import pure

try:
    from xennet.core import _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CI builds it; without it there is nothing to compare
    _native = None

__all__ = ["_native", "both"]


def _copy(a: Any) -> Any:
    if isinstance(a, bytearray):
        return bytearray(a)
    if isinstance(a, list | tuple):
        return type(a)(_copy(x) for x in a)
    return copy.copy(a)


def _call(mod: Any, name: str, args: list[Any]) -> tuple[str, Any]:
    try:
        out = getattr(mod, name)(*args)
    except ValueError as exc:
        return "error", str(exc)
    if isinstance(out, tuple):
        out = tuple(int(x) for x in out)
    elif isinstance(out, int):
        out = int(out)
    return "ok", out


def _buffers(a: Any) -> list[bytes]:
    if isinstance(a, bytearray):
        return [bytes(a)]
    if isinstance(a, list | tuple):
        return [b for x in a for b in _buffers(x)]
    return []


def both(name: str, *args: Any) -> tuple[str, Any, list[Any]]:
    """Call ``name`` on the twin and on the compiled core; assert the same result and the same
    bytes in every buffer argument afterwards.  Returns (kind, result, the twin's arguments)."""
    assert _native is not None
    a_pure, a_native = _copy(list(args)), _copy(list(args))
    r_pure = _call(pure, name, a_pure)
    r_native = _call(_native, name, a_native)
    assert r_pure == r_native, f"{name}: twin {r_pure} != compiled {r_native}"
    bp, bn = _buffers(a_pure), _buffers(a_native)
    for i, (x, y) in enumerate(zip(bp, bn, strict=True)):
        if x != y:
            diff = next(k for k in range(len(x)) if x[k] != y[k])
            raise AssertionError(
                f"{name}: buffer argument {i} differs from byte {diff}: "
                f"twin {x[diff : diff + 16].hex()} compiled {y[diff : diff + 16].hex()}"
            )
    return r_pure[0], r_pure[1], a_pure
