"""xenlab: preflight (unit), the console command channel (against a local bash), and the real lab."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xennet.xenlab import preflight as pf
from xennet.xenlab.lab import Lab, LabError, LabTimeout

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
    from xennet.xenlab.build import _Steps

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

    from xennet.xenlab import register

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


def test_wait_for_timeout_has_console_tail(fake_lab: Lab) -> None:
    fake_lab.send("echo tail-line-xyz\n")
    fake_lab.wait_for("tail-line-xyz", 5)
    with pytest.raises(LabTimeout, match="tail-line-xyz"):
        fake_lab.wait_for("never-printed", 0.5)


# -- the real lab -------------------------------------------------------------------------------------

BUILD_TIMEOUT = 15 * 60
BOOT_TIMEOUT = 4 * 60


@pytest.mark.xen
@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT + BOOT_TIMEOUT + 120)
def test_real_xen_lab_xl_info() -> None:
    from xennet.xenlab.build import BuildError, build
    from xennet.xenlab.lab import up

    workdir = pf.default_workdir()
    problems = pf.blocking(pf.preflight_build(workdir))  # probes the mirror only before the first build
    if problems:
        pytest.skip("xenlab build: " + pf.reason(problems))
    mem = pf.check_memory()
    if mem:
        pytest.skip("xenlab up: " + pf.reason(mem))
    log: list[str] = []
    try:
        res = build(workdir, progress=log.append)
    except BuildError as e:
        pytest.fail(f"build failed: {e}\n" + "\n".join(log))
    print("\n".join(log))
    print("build timings:", res.timings)
    with up(workdir, timeout=BOOT_TIMEOUT, progress=print) as lab:
        rc, out = lab.run("xl info", timeout=60)
        assert rc == 0, out
        info = dict(
            (k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        )
        assert info.get("xen_major") == "4" and info.get("xen_minor") == "17", out
        rc, out = lab.run("python3 -c 'import xennet; print(xennet.__name__)'", timeout=60)
        assert (rc, out.strip()) == (0, "xennet"), out
        lab.write_file("/tmp/hello.sh", b"#!/bin/sh\necho hello from dom0\n", mode=0o755)
        assert lab.run("/tmp/hello.sh", timeout=30) == (0, "hello from dom0\n")
        print("boot timings:", lab.timings)
    assert not lab.alive()
