from __future__ import annotations

import pytest

from xennet.packet.skb import HeapPages


@pytest.fixture
def pages() -> HeapPages:
    return HeapPages()
