"""Fixtures for the xenstore tests: an in-process core, a threaded daemon, a spawned one."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xennet.xenstore import daemon as xsd
from xennet.xenstore.client import XenstoreClient
from xennet.xenstore.server import XenstoredCore


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: unix socket paths are limited to 107 bytes, pytest's tmp_path
    can be longer than that once ``.d<domid>`` is appended."""
    d = Path(tempfile.mkdtemp(prefix="xs-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def core(request: pytest.FixtureRequest) -> XenstoredCore:
    """A fresh core; parametrize it indirectly with a ``Quotas`` to change the limits."""
    return XenstoredCore(quotas=getattr(request, "param", None))


@pytest.fixture
def connect(core: XenstoredCore) -> Iterator[Callable[[int], XenstoreClient]]:
    """connect(domid) -> an in-process client acting as that domain (closed afterwards)."""
    clients: list[XenstoreClient] = []

    def make(domid: int = 0) -> XenstoreClient:
        c = XenstoreClient.in_process(core, domid, timeout=5.0)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def dom0(connect: Callable[[int], XenstoreClient]) -> XenstoreClient:
    return connect(0)


@pytest.fixture
def threaded_daemon(short_tmp: Path) -> Iterator[xsd.Xenstored]:
    """A daemon on a socket, served by a thread of this process (cheap to start)."""
    d = xsd.Xenstored(str(short_tmp / "xs.sock"))
    d.start()
    t = threading.Thread(target=d.serve_forever, name="xenstored", daemon=True)
    t.start()
    try:
        yield d
    finally:
        d.stop()
        t.join(5)
        assert not t.is_alive(), "xenstored thread did not stop"
