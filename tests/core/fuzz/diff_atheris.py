"""The differential fuzzer: atheris mutates kernel calls (``wire.py``'s format, seeded with
recorded real calls) and every one runs on the twin and on the compiled core, which must
return the same result and leave the same bytes in every buffer (``both.both``).

    python3 tests/core/fuzz/diff_atheris.py -runs=100000 CORPUS_DIR

A call the twin cannot even take (a buffer whose length is not a whole number of its
records: memoryview refuses the cast) is not a comparison; such calls are counted and
the counts printed every 10,000 calls.  The C kernels meet those lengths in ``fuzz_kernels.c``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for core.*

with atheris.instrument_imports(include=["xennet.core.pure"]):
    from xennet.core import pure  # noqa: F401  (instrumented for coverage feedback)

from core.both import both  # noqa: E402
from core.fuzz import wire  # noqa: E402

counts = {"compared": 0, "misaligned": 0}


def one(data: bytes) -> None:
    name, args = wire.decode(data)
    try:
        both(name, *args)
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


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
