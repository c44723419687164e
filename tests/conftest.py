from __future__ import annotations

from collections.abc import Iterator

import pytest

from xennet.world.local import LocalWorld


@pytest.fixture
def world() -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        yield w
