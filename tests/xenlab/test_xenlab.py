"""xenlab: preflight (unit), the console command channel (against a local bash), and the real lab."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from xenlab import guest
from xenlab import preflight as pf
from xenlab.lab import Lab, LabError, LabTimeout

# -- preflight --------------------------------------------------------------------------------------


def test_missing_tools_one_line_each(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "_which", lambda tool: None)
    monkeypatch.setattr(pf, "BUSYBOX", tmp_path / "no-busybox")
    probs = pf.missing_tools()
    msgs = [str(p) for p in probs]
    assert "missing host tool qemu-system-x86_64 (Debian package qemu-system-x86)" in msgs
    assert any("debootstrap" in m for m in msgs)
    assert any("busybox-static" in m for m in msgs)
    assert all("\n" not in m for m in msgs)
    assert all(p.fixable and p.package for p in probs)
    assert pf.blocking(probs) == []


def test_dynamic_busybox_is_not_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF" + b"\0" * 100 + b"/lib64/ld-linux-x86-64.so.2")
    monkeypatch.setattr(pf, "BUSYBOX", fake)
    monkeypatch.setattr(pf, "_which", lambda tool: "/usr/bin/" + tool)
    assert [p.package for p in pf.missing_tools()] == ["busybox-static"]


def test_disk_and_memory_messages(tmp_path: Path) -> None:
    (d,) = pf.check_disk(tmp_path / "not" / "yet", need=1 << 60)
    assert "not enough free disk" in d.message and "need" in d.message and not d.fixable
    assert pf.check_disk(tmp_path, need=1) == []
    (m,) = pf.check_memory(need=1 << 60)
    assert m.message.startswith("not enough free memory")
    assert pf.check_memory(need=1) == []


def test_up_needs_images(tmp_path: Path) -> None:
    msgs = [p.message for p in pf.built_images(tmp_path)]
    assert len(msgs) == len(pf.IMAGES)
    assert all("xenlab build" in m for m in msgs)
    for rel in pf.IMAGES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert pf.built_images(tmp_path) == []


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    (p,) = pf.check_root()
    assert "root" in p.message


def test_apt_mirror_deb822_and_list(tmp_path: Path) -> None:
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    assert pf.apt_mirror(d) is None
    (d / "sources.list").write_text(
        "# c\ndeb [arch=amd64 signed-by=/x] http://m.example/debian bookworm main\n"
    )
    assert pf.apt_mirror(d) == "http://m.example/debian"
    (d / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\n# comment: with colon\nURIs: http://deb.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
    )
    assert pf.apt_mirror(d) == "http://deb.example/debian"


def test_preflight_without_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pf, "_which", lambda tool: None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    probs = pf.preflight_build(tmp_path, network=False)
    assert any("apt-get not found" in p.message for p in pf.blocking(probs))


def test_build_steps_cache(tmp_path: Path) -> None:
    from xenlab.build import _Steps

    timings: dict[str, float] = {}
    cached: list[str] = []
    calls: list[str] = []
    msgs: list[str] = []
    steps = _Steps(tmp_path, msgs.append, timings, cached)
    k1 = steps.run("a", ["x"], lambda: calls.append("a"))
    assert steps.run("a", ["x"], lambda: calls.append("a")) == k1
    assert calls == ["a"] and cached == ["a"]
    assert steps.run("a", ["y"], lambda: calls.append("a")) != k1  # inputs changed: rerun
    out = tmp_path / "out"

    def make_out() -> None:
        out.write_text("1")

    steps.run("b", [k1], make_out, [out])
    out.unlink()
    steps.run("b", [k1], make_out, [out])  # output gone: rerun
    assert calls == ["a", "a"] and out.exists() and "b" not in cached

    def boom() -> None:
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        steps.run("c", [], boom)
    assert not (tmp_path / "stamps" / "c").exists()  # a failed step leaves no stamp
    assert any("done in" in m for m in msgs)


def test_cli_preflight_and_down(tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from xenlab import register

    @click.group()
    def top() -> None:
        pass

    register(top)
    r = CliRunner().invoke(top, ["xenlab", "preflight", "--workdir", str(tmp_path)])
    assert r.exit_code == 1 and "xenlab build` first" in r.output
    r = CliRunner().invoke(top, ["xenlab", "down", "--workdir", str(tmp_path)])
    assert r.exit_code == 0 and "no lab running" in r.output


# -- the console command channel, against a local bash standing in for dom0 --------------------------


@pytest.fixture
def fake_lab(tmp_path: Path) -> Iterator[Lab]:
    proc = subprocess.Popen(
        ["bash", "--norc", "--noprofile"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lab = Lab(tmp_path, proc, tmp_path / "console.log", lambda s: None)
    lab.poweroff_cmd = "exit 0"  # never the real sysrq poweroff on the host
    lab.send_delay = 0.001  # a local pipe needs no pacing
    lab.line_kill = ""  # and has no line discipline
    lab.nudge_after = 0.5
    lab.send(guest.CONSOLE_RC)  # what dom0's console shell gets from its rc file
    try:
        yield lab
    finally:
        lab.down(timeout=5)
        assert not lab.alive()


def test_run_output_and_rc(fake_lab: Lab) -> None:
    fake_lab.send("echo noise before\n")
    rc, out = fake_lab.run('echo hello; echo "it\'s \\"quoted\\" $((1+2))"; echo err >&2', timeout=10)
    assert rc == 0
    assert out.splitlines() == ["hello", 'it\'s "quoted" 3', "err"]
    rc, out = fake_lab.run("echo bye; exit 7", timeout=10)
    assert (rc, out.strip()) == (7, "bye")
    # multi-line scripts and stdin closed
    rc, out = fake_lab.run("for i in 1 2; do\n echo $i\ndone\ncat; echo done", timeout=10)
    assert (rc, out.split()) == (0, ["1", "2", "done"])
    assert "XLB_" in fake_lab.console()  # markers recorded in the log


def test_run_timeout_inside(fake_lab: Lab) -> None:
    if shutil.which("timeout") is None:
        pytest.skip("no coreutils timeout")
    t0 = time.monotonic()
    rc, _ = fake_lab.run("sleep 30", timeout=1)
    assert rc == 124 and time.monotonic() - t0 < 10
    assert fake_lab.run("echo still-ok", timeout=5) == (0, "still-ok\n")


def test_run_when_console_dies(fake_lab: Lab) -> None:
    fake_lab.send("exit 3\n")
    fake_lab.proc.wait(5)
    with pytest.raises(LabError):
        fake_lab.run("echo x", timeout=2)


def test_write_file(fake_lab: Lab, tmp_path: Path) -> None:
    data = bytes(range(256)) * 9  # several chunks, binary
    dst = tmp_path / "sub dir" / "f.bin"
    dst.parent.mkdir()
    fake_lab.write_file(str(dst), data, mode=0o755)
    assert dst.read_bytes() == data and os.access(dst, os.X_OK)


def test_run_detects_lost_characters(fake_lab: Lab) -> None:
    fake_lab.send("md5sum() { echo mangled; }\n")  # as if the serial line had dropped bytes
    rc, out = fake_lab.run("echo never-runs", timeout=5)
    assert (rc, out.strip()) == (255, "XLCORRUPT")


@pytest.mark.parametrize("where", [3, 40, -20, -1])
def test_run_resends_a_garbled_line(
    fake_lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: int
) -> None:
    """The first copy of the line loses a character (in `xlrun`, the tag, the base64, the newline):
    nothing runs from it, and the second copy runs once."""
    real_send = fake_lab.send
    garbled: list[str] = []

    def lossy(text: str, slower: int = 0) -> None:
        if text.startswith("xlrun") and not garbled:
            garbled.append(text)
            text = text[:where] + (text[where + 1 :] if where != -1 else "")  # -1: the newline
        real_send(text, slower)

    monkeypatch.setattr(fake_lab, "send", lossy)
    counter = tmp_path / "counter"
    rc, out = fake_lab.run(f"echo ran >> {counter}; cat {counter} | wc -l", timeout=10)
    # a lost newline is made good by the bare newline that follows silence; the rest are resent
    assert (rc, out.strip(), fake_lab.retransmits) == (0, "1", 0 if where == -1 else 1)
    assert garbled


class _BurstLossyPipe:
    """A serial line that drops the last byte of any burst over ``limit`` bytes, as a UART
    whose FIFO overflows while a loaded host's dom0 is not draining it."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        self.pipe, self.limit = pipe, limit

    def write(self, data: bytes) -> int:
        return self.pipe.write(data[:-1] if len(data) > self.limit else data)

    def flush(self) -> None:
        self.pipe.flush()


def test_run_backs_off_until_the_line_gets_through(fake_lab: Lab) -> None:
    """Every burst of 32 or 16 bytes loses a byte: the line is resent in smaller, slower bursts
    until it arrives whole, and runs once."""
    assert fake_lab.proc.stdin is not None
    pipe = fake_lab.proc.stdin
    fake_lab.proc.stdin = _BurstLossyPipe(pipe, limit=8)  # type: ignore[assignment]
    try:
        rc, out = fake_lab.run("echo through", timeout=10)
    finally:
        fake_lab.proc.stdin = pipe
    assert (rc, out.strip(), fake_lab.retransmits) == (0, "through", 2)


def test_wait_for_timeout_has_console_tail(fake_lab: Lab) -> None:
    fake_lab.send("echo tail-line-xyz\n")
    fake_lab.wait_for("tail-line-xyz", 5)
    with pytest.raises(LabTimeout, match="tail-line-xyz"):
        fake_lab.wait_for("never-printed", 0.5)


# -- the real lab (the `lab` fixture is in conftest.py) ----------------------------------------------


@pytest.mark.xen
@pytest.mark.slow
def test_real_xen_lab_xl_info(lab: Lab) -> None:
    rc, out = lab.run("xl info", timeout=60)
    assert rc == 0, out
    info = dict((k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln))
    assert info.get("xen_major") == "4" and info.get("xen_minor") == "17", out
    rc, out = lab.run("python3 -c 'import xennet; print(xennet.__name__)'", timeout=60)
    assert (rc, out.strip()) == (0, "xennet"), out
    lab.write_file("/tmp/hello dir/hello.sh", b"#!/bin/sh\necho hello from dom0\n", mode=0o755)
    assert lab.run("'/tmp/hello dir/hello.sh'", timeout=30) == (0, "hello from dom0\n")
    # dom0's side of the domU plumbing: the bridge, the domUs' read-only root disk, the domU boot files
    out = lab.check(
        f"ip -br addr show {guest.BRIDGE}; blockdev --getro {guest.DOMU_ROOT_DEV}; "
        f"ls {guest.DOMU_KERNEL} {guest.DOMU_INITRD} {guest.DOMU_INIT_PATH}; lsmod | grep -c xen_netback"
    )
    assert guest.BRIDGE_CIDR in out and "\n1\n" in out, out
    print("boot timings:", lab.timings)


@pytest.mark.xen
def test_xen_platform_selftest_in_dom0(lab: Lab) -> None:
    """The README's claim: every check of the xen platform's selftest passes in dom0."""
    listed = subprocess.run(
        [sys.executable, "-m", "xennet.platform.xen.selftest", "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = listed.stdout.split()
    assert len(names) >= 14, names
    rc, out = lab.run("python3 -m xennet.platform.xen.selftest", timeout=300)
    assert rc == 0, out
    assert out.strip().splitlines()[-1] == f"{len(names)} passed, 0 failed, 0 skipped", out


@pytest.mark.xen
def test_xen_platform_tests_in_dom0(lab: Lab) -> None:
    """tests/xenlab/dom0_xen_real.py under pytest in dom0: the devices looped back to dom0."""
    src = Path(__file__).with_name("dom0_xen_real.py").read_bytes()
    lab.write_file("/tmp/xennet-tests/dom0_xen_real.py", src)
    rc, out = lab.run(
        "cd /tmp/xennet-tests && python3 -m pytest -q -p no:cacheprovider -c /dev/null -rs dom0_xen_real.py",
        timeout=300,
    )
    assert rc == 0, out
    n = src.count(b"\ndef test_")
    assert f"{n} passed" in out and "skipped" not in out, out


# -- domU pieces that need no lab -------------------------------------------------------------------


def test_domu_xl_config() -> None:
    from xenlab import domu

    cfg = domu.xl_config(
        "u1", vifs=["bridge=xenbr0,mac=00:16:3e:00:00:10", "backend=0"], kernel_netfront=False
    )
    kv = dict(ln.split(" = ", 1) for ln in cfg.splitlines())
    assert kv["name"] == "'u1'" and kv["type"] == "'pv'" and kv["memory"] == "320"
    assert kv["kernel"] == f"'{guest.DOMU_KERNEL}'" and kv["ramdisk"] == f"'{guest.DOMU_INITRD}'"
    assert "console=hvc0" in kv["extra"] and "xennet.kfront=0" in kv["extra"]
    assert (
        kv["disk"]
        == f"[ 'vdev=xvda,access=r,script={guest.DOMU_BLOCK_SCRIPT_PATH},target={guest.DOMU_ROOT_DEV}' ]"
    )
    assert kv["vif"] == "[ 'bridge=xenbr0,mac=00:16:3e:00:00:10', 'backend=0' ]"
    assert kv["on_poweroff"] == kv["on_crash"] == "'destroy'"
    assert "xennet.kfront=1" in domu.xl_config("u2")
    assert "vif = [  ]" in domu.xl_config("u2")
    assert kv["vcpus"] == "1" and "vcpus = 2" in domu.xl_config("u2", vcpus=2)
    for bad_vcpus in (0, guest.LAB_CPUS + 1):
        with pytest.raises(ValueError, match="vcpus"):
            domu.xl_config("u2", vcpus=bad_vcpus)
    with pytest.raises(ValueError):
        domu.xl_config("u1", vifs=["mac='x'"])
    for bad in ("", "a b", "a;b", "../x", "x" * 65):
        with pytest.raises(ValueError):
            domu.check_name(bad)


def test_domu_script_limit() -> None:
    from xenlab import domu

    assert domu.check_script("echo hi\n") == b"echo hi\n"
    assert len(domu.script_path(32751)) + 1 + domu.MAX_SCRIPT_BYTES == domu.XENSTORE_PAYLOAD_MAX
    domu.check_script("x" * domu.MAX_SCRIPT_BYTES)
    with pytest.raises(ValueError, match="xenstore"):
        domu.check_script("x" * (domu.MAX_SCRIPT_BYTES + 1))
    assert domu.done_rc("a\n=== XENLAB DOMU DONE rc=3, uptime 1\n") == 3
    assert domu.done_rc("=== XENLAB DOMU UP") is None


def test_guest_scripts_parse() -> None:
    """The generated init scripts are valid shell."""
    for name, text, shell in (
        ("initramfs", guest.INITRAMFS_INIT, "sh"),
        ("dom0", guest.DOM0_INIT, "bash"),
        ("domU initramfs", guest.DOMU_INITRAMFS_INIT, "sh"),
        ("domU", guest.DOMU_INIT, "bash"),
        ("console rc", guest.CONSOLE_RC, "bash"),
        ("block hotplug", guest.DOMU_BLOCK_SCRIPT, "sh"),
    ):
        r = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"{name}: {r.stderr}"
    assert "xennet.kfront=1" in guest.DOMU_INIT and "ro,noload" in guest.DOMU_INITRAMFS_INIT
    assert f"xenstore-read -R {guest.DOMU_SCRIPT_KEY}" in guest.DOMU_INIT


def test_read_text(fake_lab: Lab, tmp_path: Path) -> None:
    f = tmp_path / "log.txt"
    f.write_bytes(b"line1\r\nline2\ttab \xe2\x86\x92 \x1b[0m\n" + b"".join(b"%d\n" % i for i in range(20000)))
    text = fake_lab.read_text(str(f), limit=1 << 20)
    assert text.startswith("line1\nline2\ttab ??? ?[0m\n0\n1\n") and text.endswith("\n19999\n")
    assert fake_lab.read_text(str(f), limit=6) == "19999\n"
    assert fake_lab.read_text(str(tmp_path / "missing")) == ""


def test_console_messages_fold_command_output(fake_lab: Lab) -> None:
    fake_lab.send("echo kernel says hi\n")
    fake_lab.wait_for("kernel says hi", 5)
    fake_lab.run("seq 1 500", timeout=10)
    fake_lab.run("true", timeout=10)
    fake_lab.send("echo kernel says bye\n")
    fake_lab.wait_for("kernel says bye", 5)
    fake_lab.run("echo x", timeout=10)
    msgs = fake_lab.console_messages()
    assert msgs.splitlines() == ["kernel says hi", "[2 dom0 commands]", "kernel says bye", "[1 dom0 command]"]


def test_wait_domu_verdicts(fake_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_domu against a local bash: a fake `xl` (alive while a file exists), console logs in tmp."""
    from xenlab import domu

    monkeypatch.setattr(domu, "CONSOLE_DIR", str(tmp_path))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    alive = tmp_path / "alive"
    (bindir / "xl").write_text(f"#!/bin/sh\n[ -e {alive} ]\n")
    (bindir / "xl").chmod(0o755)
    fake_lab.send(f"export PATH={bindir}:$PATH\n")
    log = tmp_path / "guest-u1.log"
    log.write_text("=== XENLAB DOMU UP\r\n=== XENLAB DOMU SCRIPT START\r\nhello\r\n")
    alive.touch()
    console = fake_lab.wait_domu("u1", "hello", timeout=10)
    assert console.splitlines()[-1] == "hello"
    with pytest.raises(LabTimeout, match="never"):
        fake_lab.wait_domu("u1", "never", timeout=1.5)
    log.write_text("x\n=== XENLAB DOMU DONE rc=1, uptime 3\n")
    t0 = time.monotonic()
    with pytest.raises(LabError, match="finished its script") as e:
        fake_lab.wait_domu("u1", "never", timeout=30)
    assert not isinstance(e.value, LabTimeout) and time.monotonic() - t0 < 10
    assert fake_lab.wait_domu("u1", "=== XENLAB DOMU DONE", timeout=5).startswith("x\n")
    alive.unlink()
    log.write_text("booting\n")
    with pytest.raises(LabError, match="is gone"):
        fake_lab.wait_domu("u1", "never", timeout=30)


@pytest.mark.parametrize("codec", ["xz", "gzip", "none"])
def test_unpack_kernel(tmp_path: Path, codec: str) -> None:
    import gzip
    import lzma

    from xenlab.build import unpack_kernel

    elf = b"\x7fELF" + bytes(range(256)) * 50
    payload = {"xz": lzma.compress(elf), "gzip": gzip.compress(elf), "none": b""}[codec]
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(b"MZ setup code \x1f\x8b not gzip " + payload + b"\0" * 64)
    unpack_kernel(bz, tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == (elf if payload else bz.read_bytes())
