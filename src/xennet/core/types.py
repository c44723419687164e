"""Buffer types of the kernels' arguments."""

from __future__ import annotations

from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview
WBuffer: TypeAlias = bytearray | memoryview
