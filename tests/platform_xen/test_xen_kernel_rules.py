"""What the Linux 6.1 drivers require, checked without Xen: mmap without a descriptor per
mapping, gntalloc's limit parameter, the xenbus device's message size and the requests it
must never forward, and the selftest's runner."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xennet.abi.xs_wire import HEADER, XsType
from xennet.platform.xen import device, selftest
from xennet.platform.xen.device import XenDeviceError, mmap_device, open_device
from xennet.platform.xen.gntalloc import ensure_gntalloc_limit, read_limit
from xennet.platform.xen.xenbus import XENBUS_DEV_PAYLOAD_MAX, XenbusTransport
from xennet.xenstore.errors import XenstoreError

PAGE = 4096


def nr_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mapped(addr: int) -> bool:
    """Whether ``addr`` is inside any mapping of this process."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("xennet-test", os.MFD_CLOEXEC)
    os.pwrite(fd, b"a" * PAGE + b"b" * PAGE, 0)
    yield fd
    os.close(fd)


# --- mmap_device ----------------------------------------------------------------------------


def test_mmap_device_holds_no_descriptor(memfd: int) -> None:
    before = nr_fds()
    maps = [mmap_device(memfd, PAGE, PAGE, writable=True) for _ in range(20)]
    assert nr_fds() == before  # mmap.mmap(fd, ...) would hold 20 more
    for m in maps:
        assert m[:1] == b"b"
    maps[0][:2] = b"xy"  # MAP_SHARED: the device (here the file) sees the write
    assert os.pread(memfd, 2, PAGE) == b"xy"
    os.pwrite(memfd, b"zz", PAGE + 10)
    assert maps[5][10:12] == b"zz"
    for m in maps:
        m.close()


def test_mmap_device_read_only_and_views(memfd: int) -> None:
    m = mmap_device(memfd, 2 * PAGE, 0, writable=False)
    addr = device.mapping_address(m)
    view = memoryview(m).toreadonly()
    assert view.readonly and bytes(view[PAGE : PAGE + 1]) == b"b"
    with pytest.raises(TypeError):
        view[0] = 1
    with pytest.raises(BufferError):  # no munmap under a live view
        m.close()
    view.release()
    m.close()
    assert not mapped(addr)


def test_mmap_device_errors_like_mmap(memfd: int) -> None:
    before = nr_fds()
    with pytest.raises(OSError) as e:
        mmap_device(memfd, PAGE, 123, writable=True)  # not page aligned
    assert e.value.errno == errno.EINVAL
    assert nr_fds() == before


class FailingDriver:
    """libc mmap whose MAP_FIXED device call fails the way a driver's ->mmap does: after the
    kernel already unmapped the range (a hole), with ``err``; ``squatter`` maps something
    else into the hole first, as another thread could."""

    def __init__(self, err: int, squatter: bool = False) -> None:
        self.real_mmap, self.real_munmap = device._libc_mmap()
        self.err = err
        self.squatter = squatter
        self.squatted: int | None = None

    def mmap(self, addr: int | None, length: int, prot: int, flags: int, fd: int, off: int) -> int | None:
        if fd >= 0 and flags & device._MAP_FIXED:
            assert addr is not None
            self.real_munmap(addr, length)
            if self.squatter:
                anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                got = self.real_mmap(addr, length, mmap.PROT_READ, anon, -1, 0)
                assert got == addr
                self.squatted = got
            ctypes.set_errno(self.err)
            return device._MAP_FAILED
        return self.real_mmap(addr, length, prot, flags, fd, off)


def test_a_failed_driver_mmap_gives_the_range_back(memfd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FailingDriver(errno.ENOENT)
    monkeypatch.setattr(device, "_libc", (fake.mmap, fake.real_munmap))
    orphans = len(device._orphans)
    with pytest.raises(OSError) as e:
        mmap_device(memfd, 2 * PAGE, 0, writable=True)
    assert e.value.errno == errno.ENOENT
    assert len(device._orphans) == orphans  # the range was taken back and unmapped


def test_a_failed_driver_mmap_never_unmaps_a_squatter(memfd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FailingDriver(errno.EINVAL, squatter=True)
    monkeypatch.setattr(device, "_libc", (fake.mmap, fake.real_munmap))
    orphans = len(device._orphans)
    with pytest.raises(OSError) as e:
        mmap_device(memfd, PAGE, 0, writable=True)
    assert e.value.errno == errno.EINVAL
    assert fake.squatted is not None and mapped(fake.squatted)  # still there
    assert len(device._orphans) == orphans + 1  # our placeholder is kept, never closed
    fake.real_munmap(fake.squatted, PAGE)


# --- open ---------------------------------------------------------------------------------


def test_open_enoent_of_an_existing_node_is_not_a_missing_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "xenbus").touch()

    def refuse(path: str, flags: int) -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(XenDeviceError, match="xenstored running") as e:
        open_device("xenbus", str(tmp_path))
    assert e.value.errno == errno.ENOENT


# --- gntalloc's limit -----------------------------------------------------------------------


def test_gntalloc_limit_is_raised_never_lowered(tmp_path: Path) -> None:
    param = tmp_path / "limit"
    param.write_text("1024\n")
    assert read_limit(str(param)) == 1024
    assert ensure_gntalloc_limit(8192, str(param)) == 8192
    assert param.read_text() == "8192\n"
    assert ensure_gntalloc_limit(2048, str(param)) == 8192
    assert read_limit(str(tmp_path / "absent")) is None
    assert ensure_gntalloc_limit(8192, str(tmp_path / "absent")) is None


def test_gntalloc_limit_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    param = tmp_path / "limit"
    param.write_text("1024\n")
    real_open = open

    def read_only(path: str, mode: str = "r", *a: object, **k: object) -> object:
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, mode)

    monkeypatch.setattr("builtins.open", read_only)
    assert ensure_gntalloc_limit(8192, str(param)) == 1024


# --- the xenbus device ----------------------------------------------------------------------


@pytest.fixture
def pipe_transport() -> Iterator[tuple[XenbusTransport, int]]:
    """A transport whose writes land in a pipe (what would reach the kernel)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    t = XenbusTransport(fd=w)
    yield t, r
    t.close()
    os.close(r)


def written(r: int) -> bytes:
    try:
        return os.read(r, 1 << 16)
    except BlockingIOError:
        return b""


def test_payload_limit_is_the_kernel_buffer_less_header(pipe_transport: tuple[XenbusTransport, int]) -> None:
    t, r = pipe_transport
    assert XENBUS_DEV_PAYLOAD_MAX == 4096 - HEADER.size
    ok = HEADER.pack(XsType.XS_WRITE, 1, 0, XENBUS_DEV_PAYLOAD_MAX) + b"x" * XENBUS_DEV_PAYLOAD_MAX
    t.send(ok)
    assert written(r) == ok
    big = HEADER.pack(XsType.XS_WRITE, 2, 0, XENBUS_DEV_PAYLOAD_MAX + 1) + b"x" * (XENBUS_DEV_PAYLOAD_MAX + 1)
    with pytest.raises(XenstoreError) as e:
        t.send(big)
    assert e.value.errno_name == "E2BIG"
    assert written(r) == b""


def test_reset_watches_never_reaches_the_kernel(pipe_transport: tuple[XenbusTransport, int]) -> None:
    t, r = pipe_transport
    t.send(HEADER.pack(XsType.XS_RESET_WATCHES, 7, 0, 0))
    assert written(r) == b""
    reply = t.recv(0)
    type_, req_id, _tx, length = HEADER.unpack_from(reply, 0)
    assert (type_, req_id) == (XsType.XS_ERROR, 7)
    assert reply[HEADER.size :] == b"ENOSYS\0"


# --- the selftest's runner ------------------------------------------------------------------


def test_checks_are_independent_and_bounded() -> None:
    r, w = os.pipe()
    try:

        def hangs() -> str:
            select.select([r], [], [], 30)  # interrupted by the time limit
            return "never"

        def breaks() -> str:
            raise ValueError("boom")

        def skips() -> str:
            raise selftest.CheckSkipped("not here")

        t0 = time.monotonic()
        assert selftest.run_check("h", hangs, 0.2) == selftest.Result("h", "FAIL", "timed out after 0.2s")
        assert time.monotonic() - t0 < 5
        assert selftest.run_check("b", breaks, 5) == selftest.Result("b", "FAIL", "ValueError: boom")
        assert selftest.run_check("s", skips, 5).status == "SKIP"
        assert selftest.run_check("p", lambda: "fine", 5) == selftest.Result("p", "PASS", "fine")
    finally:
        os.close(r)
        os.close(w)


def test_selftest_without_xen_fails_every_check_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    if os.path.exists("/dev/xen"):
        pytest.skip("/dev/xen exists: this may be a real Xen domain")
    t0 = time.monotonic()
    rc = selftest.main(["--timeout", "5"])
    assert time.monotonic() - t0 < 30
    lines = capsys.readouterr().out.splitlines()
    names = [name for name, _ in selftest.Selftest().checks]
    assert rc == 1
    assert len(lines) == len(names) + 1
    for line, name in zip(lines, names, strict=False):
        assert line.startswith(("FAIL ", "SKIP ")) and line.split()[1] == f"{name}:", line
    assert lines[-1] == f"0 passed, {len(names)} failed, 0 skipped"


def test_selftest_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert selftest.main(["--list"]) == 0
    assert "grant-copy-batch" in capsys.readouterr().out.split()
