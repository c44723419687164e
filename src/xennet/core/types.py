"""Buffer types of the kernels' arguments."""

from __future__ import annotations

from array import array
from typing import TypeAlias

Buffer: TypeAlias = "bytes | bytearray | memoryview | array[int]"
WBuffer: TypeAlias = "bytearray | memoryview | array[int]"
