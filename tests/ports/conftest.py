"""Fixtures for the ports tests: pages, a throwaway network namespace, a TAP inside it.

Everything a test creates lives in a namespace the test created (10.213.x.y, fd00:213::/64);
the host's own interfaces are never touched.  Namespaces and TAPs are removed in ``finally``
blocks, so a failing test leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tapnet import netns_skip_reason, open_tap

from xennet.packet.skb import HeapPages
from xennet.ports.netns import Netns
from xennet.ports.tap import Tap


@pytest.fixture
def pages() -> HeapPages:
    return HeapPages()


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        ns = Netns.create(prefix="xnt")
    except PermissionError as e:
        pytest.skip(f"cannot create a network namespace here: {e}")
    try:
        yield ns
    finally:
        ns.delete()
        assert not ns.path.exists(), f"namespace {ns.name} left behind"


@pytest.fixture(params=[True, False], ids=["offloads", "no-offloads"])
def tap_any(request: pytest.FixtureRequest, netns: Netns) -> Iterator[tuple[Netns, Tap]]:
    tap = open_tap(netns, offloads=request.param)
    try:
        yield netns, tap
    finally:
        tap.close()


@pytest.fixture
def tap_on(netns: Netns) -> Iterator[tuple[Netns, Tap]]:
    tap = open_tap(netns, offloads=True)
    try:
        yield netns, tap
    finally:
        tap.close()
