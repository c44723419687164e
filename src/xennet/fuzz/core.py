"""The differential fuzzer: atheris mutates kernel calls (``wire.py``'s format, seeded with
recorded real calls) and every one runs on the twin and on the compiled core, which must
return the same result and leave the same bytes in every buffer (``both.both``).

    xennet fuzz --target core --seconds 60
    python3 -m xennet.fuzz.core -runs=100000 CORPUS_DIR      (scripts/fuzz-core.sh)

A call the twin cannot even take (a buffer whose length is not a whole number of its
records: memoryview refuses the cast) is not a comparison; such calls are counted and
the counts printed every 10,000 calls.  The C kernels meet those lengths in ``fuzz_kernels.c``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import harness, wire

REGRESSIONS = Path(__file__).resolve().parents[3] / "tests" / "core" / "fuzz" / "regressions"

counts = {"compared": 0, "misaligned": 0}
_both: list[Callable[..., Any]] = []


def _compare() -> Callable[..., Any]:
    """``both.both``, imported on first use: the twin must be imported under atheris's
    instrumentation, which starts after this module is loaded."""
    if not _both:
        from .both import _native, both

        if _native is None:
            raise RuntimeError("the compiled core is not built (python3 setup.py build_ext --inplace)")
        _both.append(both)
    return _both[0]


def one(data: bytes) -> None:
    name, args = wire.decode(data)
    try:
        _compare()(name, *args)
    except TypeError as exc:
        if "multiple of itemsize" not in str(exc) and "length is not a multiple" not in str(exc):
            raise
        counts["misaligned"] += 1
    else:
        counts["compared"] += 1
    if (counts["compared"] + counts["misaligned"]) % 10000 == 0:
        _report()


def _report() -> None:
    c, m = counts["compared"], counts["misaligned"]
    print(f"diff_atheris: {c} calls compared, {m} not comparable", flush=True)


class Harness(harness.Harness):
    """Stateless: every call gets fresh copies of its arguments, so there is nothing to leak."""

    max_len = 262144
    check_every = 4096

    def __init__(self, name: str) -> None:
        super().__init__(name)
        _compare()  # fail at the start, in one line, when there is no compiled core

    def seeds(self) -> list[bytes]:
        # the inputs the fuzzers failed on once, when run from a source tree
        return [p.read_bytes() for p in sorted(REGRESSIONS.glob("*"))] if REGRESSIONS.is_dir() else []

    def one(self, data: bytes) -> None:
        one(data)


if __name__ == "__main__":
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["xennet.core.pure"]):
        from xennet.core import pure  # noqa: F401  (instrumented for coverage feedback)
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
