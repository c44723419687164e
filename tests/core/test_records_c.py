"""The records and reason codes are declared once, in core/records.py; the compiled core's
header (core/native/xn_core.h) must lay them out the same.  This compiles the header with gcc
and compares every record's size and every member's offset, the flag values and the
reason-code enums.  gcc is part of the build: its absence is a failure here."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest

import cprog
from xennet.abi.gntdev import GNTDEV_GRANT_COPY_SEGMENT
from xennet.core import records as r

HEADER_DIR = Path(r.__file__).with_name("native")

FLAGS = [
    "PIECE_OWN_GRANT", "PIECE_POOL", "PIECE_RUN", "PIECE_PRIV",
    "PKT_CSUM_PARTIAL", "PKT_DATA_VALIDATED", "PKT_CSUM_FAILED",
    "TXK_DATA", "TXK_MCAST_ADD", "TXK_MCAST_DEL",
    "POOL_NOT_OURS", "POOL_FREE", "POOL_TAKEN",
    "PAGE_SIZE", "RING_OFFSET", "MAX_PACKET", "GSO_MIN_SIZE", "GSO_HEADER_PEEK",
]  # fmt: skip
ENUMS: list[tuple[type[enum.IntEnum], str]] = [
    (r.TxError, "XN_TXE_"),
    (r.TxFatal, "XN_TXF_"),
    (r.RxError, "XN_RXE_"),
    (r.RxFatal, "XN_RXF_"),
]
# decided above the kernels, in the queues: the C core never produces these (the rx error
# codes it does know, to pass them through and refuse any past them)
PYTHON_ONLY = {
    "TxFatal.RING_OVERFLOW",
    "RxFatal.RESPONSE_OVERFLOW",
}
C_NAMES = {"RING_OFFSET": "XN_RING_OFFSET", "PAGE_SIZE": "XN_PAGE_SIZE", "MAX_PACKET": "XN_MAX_PACKET"}


def _program() -> tuple[str, dict[str, int]]:
    want: dict[str, int] = {}
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "xn_core.h"', "int main(void) {"]

    def emit(key: str, expr: str, value: int) -> None:
        want[key] = value
        lines.append(f'    printf("%s\\t%lld\\n", "{key}", (long long)({expr}));')

    segment = ("struct xn_seg", GNTDEV_GRANT_COPY_SEGMENT)
    for cname, rec in [(x.cname, x) for x in r.RECORDS] + [segment]:
        emit(f"sizeof {cname}", f"sizeof({cname})", rec.size)
        for path, off, _t in rec.leaves():
            emit(f"offsetof {cname}.{path}", f"offsetof({cname}, {path})", off)
    for name in FLAGS:
        emit(name, C_NAMES.get(name, f"XN_{name}"), getattr(r, name))
    for e, prefix in ENUMS:
        for m in e:
            if f"{e.__name__}.{m.name}" not in PYTHON_ONLY:
                emit(f"{e.__name__}.{m.name}", f"{prefix}{m.name}", m.value)
    lines += ["    return 0;", "}"]
    return "\n".join(lines), want


@pytest.fixture(scope="module")
def c_values() -> tuple[dict[str, int], dict[str, int]]:
    src, want = _program()
    out = cprog.compile_and_run(src, "records", ["-std=c11", "-Werror", f"-I{HEADER_DIR}"])
    got = {key: int(value) for key, value in out.items()}
    return want, got


def test_records_and_codes_match_the_c_header(c_values: tuple[dict[str, int], dict[str, int]]) -> None:
    want, got = c_values
    wrong = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
    assert not wrong, f"records.py vs xn_core.h (python, C): {wrong}"


def test_the_check_is_not_vacuous(c_values: tuple[dict[str, int], dict[str, int]]) -> None:
    want, _ = c_values
    assert sum(k.startswith("offsetof") for k in want) >= 60
    assert sum(k.startswith("sizeof") for k in want) == len(r.RECORDS) + 1
