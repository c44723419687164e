"""Seed corpus: record real kernel calls (their inputs, before the call) while tests run.

``XENNET_FUZZ_RECORD=DIR`` with ``XENNET_PURE=1`` makes tests/conftest.py wrap the twin's
kernels; the first ``XENNET_FUZZ_RECORD_PER`` (default 40) distinct calls of each kernel
land in DIR, one file each, in the format of ``wire.py``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xennet.core import pure
from xennet.fuzz import wire


def install(out: Path, per_kernel: int = 40) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, _ in wire.TARGETS:
        setattr(pure, name, _recorder(name, getattr(pure, name), out, per_kernel))


def _recorder(name: str, fn: Callable[..., Any], out: Path, limit: int) -> Callable[..., Any]:
    seen: set[str] = set()

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        if len(seen) < limit:
            try:
                data = wire.encode(name, list(args))
            except (TypeError, ValueError):  # an argument wire.py cannot carry: skip it
                data = b""
            digest = hashlib.sha1(data).hexdigest()[:16]
            if data and digest not in seen:
                seen.add(digest)
                (out / f"{name}-{os.getpid()}-{digest}").write_bytes(data)
        return fn(*args)

    return call
