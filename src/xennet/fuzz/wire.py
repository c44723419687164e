"""The fuzz input format, the Python end: one input is one kernel call.

``fuzz_kernels.c`` (libFuzzer, under ASan and UBSan) and ``diff_atheris.py`` (the twin
against the compiled core) read the same bytes, so one corpus serves both.  The kernels'
argument formats are read from the C harness's ``TARGETS`` table: that table is their one
home here, and ``test_fuzz_wire.py`` holds it equal to ``module.c``'s ``PyArg_ParseTuple``
formats.  Layout: see the comment at the top of ``fuzz_kernels.c``.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).with_name("fuzz_kernels.c")
MAX_BUF = 0xFFFF
MAX_DOMAINS = 4


def targets() -> list[tuple[str, str]]:
    """(kernel name, argument format) in TARGETS order."""
    src = HARNESS.read_text()
    table = src[src.index("TARGETS[] = {") :]
    return re.findall(r'\{"(\w+)", "(\w+)", k_\w+\}', table)


TARGETS = targets()
INDEX = {name: i for i, (name, _) in enumerate(TARGETS)}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> int:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return int.from_bytes(chunk.ljust(n, b"\0"), "little")

    def buf(self) -> bytearray:
        n = self.take(2)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return bytearray(chunk.ljust(n, b"\0"))


def decode(data: bytes) -> tuple[str, list[Any]]:
    """The kernel and its arguments, as Python passes them (bytearray buffers, int scalars)."""
    name, fmt = TARGETS[data[0] % len(TARGETS)] if data else TARGETS[0]
    r = _Reader(data[1:])
    args: list[Any] = []
    for c in fmt:
        if c in "yw":
            args.append(r.buf())
        elif c == "n":
            args.append(r.take(4))
        elif c == "K":
            args.append(r.take(8))
        elif c == "i":
            args.append(struct.unpack("<i", r.take(4).to_bytes(4, "little"))[0])
        elif c == "p":
            args.append(bool(r.take(1) & 1))
        elif c == "O" and name == "grant_copy":
            doms = []
            for _ in range(r.take(1) % (MAX_DOMAINS + 1)):
                domid = r.take(4)
                doms.append((domid, r.buf(), r.buf()))
            args.append(doms)
        elif c == "O":
            args.append(r.buf() if r.take(1) & 1 else None)
    return name, args


def _u(n: int, width: int) -> bytes:
    return (n & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def _b(v: Any, cap: int = MAX_BUF) -> bytes:
    raw = bytes(memoryview(v).cast("B")[:cap])
    return _u(len(raw), 2) + raw


def encode(name: str, args: list[Any], cap: int = MAX_BUF) -> bytes:
    """One call as a fuzz input; buffers longer than ``cap`` are cut (a seed need not be exact)."""
    fmt = TARGETS[INDEX[name]][1]
    out = [bytes([INDEX[name]])]
    for c, a in zip(fmt, args, strict=True):
        if c in "yw":
            out.append(_b(a, cap))
        elif c == "n":
            out.append(_u(int(a), 4))
        elif c == "K":
            out.append(_u(int(a), 8))
        elif c == "i":
            out.append(struct.pack("<i", int(a)))
        elif c == "p":
            out.append(bytes([1 if a else 0]))
        elif c == "O" and name == "grant_copy":
            doms = list(a)[:MAX_DOMAINS]
            out.append(bytes([len(doms)]))
            for domid, table, mem in doms:
                out += [_u(domid, 4), _b(table, cap), _b(mem, cap)]
        elif c == "O":
            out.append(b"\0" if a is None else b"\1" + _b(a, cap))
    return b"".join(out)
