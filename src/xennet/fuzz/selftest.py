"""Harnesses broken on purpose: the fuzzer must find the magic byte and the campaign must
report a crash, a leak or a hang with its input saved (tests/fuzz/test_fuzz_cli.py)."""

from __future__ import annotations

import time

from . import harness

MAGIC = 0xA5


class Harness(harness.Harness):
    check_every = 16

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.kind = name.removeprefix("selftest-")
        self.held = 0

    def seeds(self) -> list[bytes]:
        return [b"\0\0"]

    def one(self, data: bytes) -> None:
        if len(data) < 2 or data[1] != MAGIC:
            return
        if self.kind == "crash":
            raise RuntimeError(f"selftest: magic byte {MAGIC:#x} found")
        if self.kind == "leak":
            self.held += 1
        if self.kind == "hang":
            time.sleep(60)

    def check(self) -> None:
        if self.held:
            raise harness.Leak(f"selftest: {self.held} pages held after teardown")
