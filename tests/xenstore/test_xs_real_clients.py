"""Debian's xenstore-utils (C libxenstore) against our daemon, and our client against
what they write. Each test works in its own subtree of one spawned daemon."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from xennet.xenstore import daemon as xsd
from xennet.xenstore.client import XenstoreClient

TOOLS = [
    "xenstore-read",
    "xenstore-write",
    "xenstore-ls",
    "xenstore-rm",
    "xenstore-chmod",
    "xenstore-watch",
    "xenstore-exists",
    "xenstore-list",
]
missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = [
    pytest.mark.slow,  # multi-process: a spawned daemon and the C clients
    pytest.mark.skipif(
        bool(missing),
        reason=f"xenstore-utils not installed (missing {', '.join(missing)}): apt-get install xenstore-utils",
    ),
]


@dataclass
class Daemon:
    sock: str
    dom0: XenstoreClient

    def run(self, *argv: str, sock: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "XENSTORED_PATH": sock or self.sock}
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=10)


@pytest.fixture(scope="module")
def xsd_proc() -> Iterator[Daemon]:
    tmp = tempfile.mkdtemp(prefix="xs-real-")
    sock = os.path.join(tmp, "xs.sock")
    proc = xsd.spawn(sock)
    try:
        with XenstoreClient(sock, timeout=5) as dom0:
            yield Daemon(sock, dom0)
    finally:
        assert xsd.stop(proc) == 0, "daemon did not exit cleanly on SIGTERM"
        shutil.rmtree(tmp, ignore_errors=True)


def test_write_then_our_client_reads(xsd_proc: Daemon) -> None:
    r = xsd_proc.run("xenstore-write", "/rc1/a", "hello world", "/rc1/b/c", "x")
    assert r.returncode == 0, r.stderr
    assert xsd_proc.dom0.read_str("/rc1/a") == "hello world"
    assert xsd_proc.dom0.read_str("/rc1/b/c") == "x"
    assert xsd_proc.dom0.directory("/rc1") == ["a", "b"]


def test_our_write_then_read_exists_list(xsd_proc: Daemon) -> None:
    xsd_proc.dom0.write("/rc2/k1", "v1")
    xsd_proc.dom0.write("/rc2/k2", "")
    r = xsd_proc.run("xenstore-read", "/rc2/k1", "/rc2/k2")
    assert (r.returncode, r.stdout) == (0, "v1\n\n")
    r = xsd_proc.run("xenstore-read", "-p", "/rc2/k1")
    assert r.stdout == "/rc2/k1: v1\n"
    r = xsd_proc.run("xenstore-read", "/rc2/nope")
    assert r.returncode == 1 and "couldn't read path /rc2/nope" in r.stderr
    assert xsd_proc.run("xenstore-exists", "/rc2/k1").returncode == 0
    assert xsd_proc.run("xenstore-exists", "/rc2/nope").returncode == 1
    r = xsd_proc.run("xenstore-list", "/rc2")
    assert (r.returncode, r.stdout) == (0, "k1\nk2\n")


def test_ls_shows_tree_and_permissions(xsd_proc: Daemon) -> None:
    dom0 = xsd_proc.dom0
    dom0.mkdir("/rc3/vif")
    dom0.set_perms("/rc3/vif", ["n0", "r1"])
    dom0.write("/rc3/vif/state", "4")  # children inherit (n0,r1)
    dom0.write("/rc3/vif/mac", "00:16:3e:00:00:02")
    r = xsd_proc.run("xenstore-chmod", "/rc3/vif/state", "n1", "r0")
    assert r.returncode == 0, r.stderr
    assert dom0.get_perms("/rc3/vif/state") == ["n1", "r0"]
    r = xsd_proc.run("xenstore-ls", "/rc3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['vif = ""', ' state = "4"', ' mac = "00:16:3e:00:00:02"']
    r = xsd_proc.run("xenstore-ls", "-f", "-p", "/rc3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        '/rc3/vif = ""   (n0,r1)',
        '/rc3/vif/state = "4"   (n1,r0)',
        '/rc3/vif/mac = "00:16:3e:00:00:02"   (n0,r1)',
    ]


def test_chmod_recursive(xsd_proc: Daemon) -> None:
    xsd_proc.dom0.write("/rc4/a/b", "1")
    r = xsd_proc.run("xenstore-chmod", "-r", "/rc4", "b0", "r3")
    assert r.returncode == 0, r.stderr
    for p in ("/rc4", "/rc4/a", "/rc4/a/b"):
        assert xsd_proc.dom0.get_perms(p) == ["b0", "r3"]


def test_rm(xsd_proc: Daemon) -> None:
    xsd_proc.dom0.write("/rc5/x/y", "1")
    xsd_proc.dom0.write("/rc5/z", "2")
    assert xsd_proc.run("xenstore-rm", "/rc5/x").returncode == 0
    assert xsd_proc.dom0.directory("/rc5") == ["z"]
    # Missing node with an existing parent: success, as with C xenstored.
    assert xsd_proc.run("xenstore-rm", "/rc5/x").returncode == 0
    r = xsd_proc.run("xenstore-rm", "/rc5/x/deeper")
    assert r.returncode == 1 and "could not remove" in r.stderr


def read_line(proc: subprocess.Popen[str], timeout: float = 5.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "xenstore-watch printed nothing in time"
    return proc.stdout.readline().rstrip("\n")


def test_watch(xsd_proc: Daemon) -> None:
    env = {**os.environ, "XENSTORED_PATH": xsd_proc.sock}
    proc = subprocess.Popen(["xenstore-watch", "/rc6"], env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert read_line(proc) == "/rc6"  # the registration event
        xsd_proc.dom0.write("/rc6/key", "v")
        assert read_line(proc) == "/rc6/key"
        xsd_proc.run("xenstore-write", "/rc6", "top")
        assert read_line(proc) == "/rc6"
        xsd_proc.dom0.write("/rc6x", "not below the watch")
        xsd_proc.dom0.rm("/rc6")
        assert read_line(proc) == "/rc6"  # the sibling write above printed nothing
    finally:
        proc.kill()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def test_watch_with_event_count_exits(xsd_proc: Daemon) -> None:
    env = {**os.environ, "XENSTORED_PATH": xsd_proc.sock}
    proc = subprocess.Popen(
        ["xenstore-watch", "-n", "2", "/rc7"], env=env, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert read_line(proc) == "/rc7"  # registered: only now can a write be seen
        xsd_proc.dom0.write("/rc7/a", "1")
        out, _ = proc.communicate(timeout=5)
        assert proc.returncode == 0
        assert out.splitlines() == ["/rc7/a"]
    finally:
        proc.kill()
        proc.wait(5)


def test_guest_socket_with_real_clients(xsd_proc: Daemon) -> None:
    dom0 = xsd_proc.dom0
    dom0.mkdir("/local/domain/8")
    dom0.set_perms("/local/domain/8", ["n8", "r0"])
    dom0.write("/rc8-secret", "s")
    dom0.introduce(8, 0, 1)
    guest = xsd.domain_socket_path(xsd_proc.sock, 8)
    try:
        # A relative path lands in the guest's home; it owns what it creates.
        r = xsd_proc.run("xenstore-write", "device/vif/0/state", "1", sock=guest)
        assert r.returncode == 0, r.stderr
        assert dom0.read_str("/local/domain/8/device/vif/0/state") == "1"
        assert dom0.get_perms("/local/domain/8/device/vif/0/state") == ["n8", "r0"]
        r = xsd_proc.run("xenstore-read", "/rc8-secret", sock=guest)
        assert r.returncode == 1
        r = xsd_proc.run("xenstore-write", "/rc8-secret", "mine", sock=guest)
        assert r.returncode == 1
        assert dom0.read_str("/rc8-secret") == "s"
    finally:
        dom0.release(8)
    assert not os.path.exists(guest)


def test_list_directory_larger_than_one_reply(xsd_proc: Daemon) -> None:
    # 200 names of ~30 bytes exceed XENSTORE_PAYLOAD_MAX: libxenstore gets E2BIG for
    # XS_DIRECTORY and falls back to XS_DIRECTORY_PART chunks.
    names = [f"a-fairly-long-child-name-{i:04d}" for i in range(200)]
    with xsd_proc.dom0.transaction() as t:
        for n in names:
            t.write(f"/rc9/{n}", "")
    r = xsd_proc.run("xenstore-list", "/rc9")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == names
