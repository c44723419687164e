"""Boot the lab (Xen 4.17 + Debian dom0 under QEMU/TCG) and drive dom0 over its serial console."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from . import guest
from .preflight import preflight_up, reason

Progress = Callable[[str], None]

XEN_ARGS = (
    "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M loglvl=all guest_loglvl=all noreboot "
    # TCG's SMAP/SMEP emulation makes Xen's own accesses to the PV dom0 kernel stack fault
    "smap=0 smep=0"
)
DOM0_ARGS = "console=hvc0 earlyprintk=xen loglevel=5"


class LabError(RuntimeError):
    pass


class LabTimeout(LabError):
    pass


def _noop(_: str) -> None:
    pass


class Lab:
    """A running QEMU with Xen and dom0.  Use as a context manager, or call down() yourself."""

    def __init__(self, workdir: Path, proc: subprocess.Popen[bytes], console_log: Path, progress: Progress):
        self.workdir = workdir
        self.proc = proc
        self.console_log = console_log
        self.progress = progress
        self.t_start = time.monotonic()
        self.timings: dict[str, float] = {}
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._log = console_log.open("wb")
        self._lock = threading.Lock()  # one command at a time on the console
        #: what down() types first; dom0 powering off makes Xen power off the (virtual) machine
        self.poweroff_cmd = "sync; echo o > /proc/sysrq-trigger"
        self.send_chunk = 32
        self.send_delay = 0.03
        self._reader = threading.Thread(target=self._read_loop, name="xenlab-console", daemon=True)
        self._reader.start()

    # -- console ---------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += chunk
                self._cond.notify_all()
            self._log.write(chunk)
            self._log.flush()

    def console(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", "replace")

    def console_tail(self, lines: int = 40) -> str:
        return "\n".join(self.console().replace("\r", "").splitlines()[-lines:])

    def wait_for(self, pattern: str | re.Pattern[bytes], timeout: float, start: int = 0) -> re.Match[bytes]:
        """Wait until ``pattern`` (a literal string or a bytes regex) shows in the console after ``start``."""
        rx = re.compile(re.escape(pattern.encode())) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self._buf, start)
                if m is not None:
                    return m
                if self._eof:
                    raise LabError(
                        f"qemu exited (rc={self.proc.poll()}) before {rx.pattern!r}; console tail:\n"
                        + self.console_tail()
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabTimeout(
                        f"timeout {timeout:.0f}s waiting for {rx.pattern!r}; console tail:\n"
                        + self.console_tail()
                    )
                self._cond.wait(min(left, 1.0))

    def _mark(self) -> int:
        with self._cond:
            return len(self._buf)

    def send(self, text: str) -> None:
        """Type ``text`` into the console, paced: Xen's serial RX ring is small and, under TCG, dom0
        drains it slowly, so a fast burst loses characters."""
        assert self.proc.stdin is not None
        data = text.encode()
        try:
            for i in range(0, len(data), self.send_chunk):
                if i:
                    time.sleep(self.send_delay)
                self.proc.stdin.write(data[i : i + self.send_chunk])
                self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise LabError("qemu console closed") from e

    # -- commands ----------------------------------------------------------------------------------
    def run(self, cmd: str, timeout: float = 60.0, *, start_timeout: float = 30.0) -> tuple[int, str]:
        """Run ``cmd`` with bash in dom0; returns (exit code, combined stdout+stderr, CRs removed).

        The command is sent base64-encoded (no quoting issues; the typed line never contains the joined
        marker text) with its md5 checked in dom0 (rc 255 and ``XLCORRUPT`` if characters were lost on
        the serial line); it runs under coreutils ``timeout`` (rc 124 when that kills it), stdin
        /dev/null, and its output is taken between unique begin/end markers.
        """
        script = cmd.encode()
        tag = secrets.token_hex(6)
        b64 = base64.b64encode(script).decode()
        if len(b64) > 3000:
            raise LabError("command too long for the serial console line buffer (max ~2 KiB)")
        md5 = hashlib.md5(script).hexdigest()
        f = f"/tmp/xl-{tag}.sh"
        tmo = max(1, int(timeout))
        # printf pieces: the markers only appear joined in the *output*, never in the typed line
        line = (
            f"printf '\\n%s%s\\n' XLB_ {tag}; echo {b64}|base64 -d >{f}; "
            f'if [ "$(md5sum <{f})" = "{md5}  -" ]; then timeout -k 5 {tmo} bash {f} </dev/null 2>&1; '
            f"else echo XLCORRUPT; (exit 255); fi; printf '\\n%s%s rc=%d\\n' XLE_ {tag} $?; rm -f {f}\n"
        )
        with self._lock:
            start = self._mark()
            self.send(line)
            b = self.wait_for(re.compile(rb"XLB_" + tag.encode() + rb"\r*\n"), start_timeout, start)
            try:
                e = self.wait_for(
                    re.compile(rb"\r*\nXLE_" + tag.encode() + rb" rc=(\d+)"), timeout + 15, b.end()
                )
            except LabTimeout:
                self.send("\x03")  # ^C to the foreground job
                raise
            raw = bytes(self._buf[b.end() : e.start()])
        return int(e.group(1)), raw.decode("utf-8", "replace").replace("\r", "")

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Copy small ``data`` to ``path`` in dom0 over the console (~1 KB/s; for big trees rebuild)."""
        q = shlex.quote(path)
        self.check(f": > {q}.part")
        for i in range(0, len(data), 1024):
            b64 = base64.b64encode(data[i : i + 1024]).decode()
            self.check(f"echo {b64} | base64 -d >> {q}.part")
        md5 = hashlib.md5(data).hexdigest()
        self.check(f'[ "$(md5sum < {q}.part)" = "{md5}  -" ] && chmod {mode:o} {q}.part && mv {q}.part {q}')

    def check(self, cmd: str, timeout: float = 60.0) -> str:
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise LabError(f"dom0 command failed rc={rc}: {cmd}\n{out}")
        return out

    # -- lifecycle -------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def down(self, timeout: float = 20.0) -> None:
        """Power off dom0 (Xen then powers off the machine); kill qemu if it does not exit. Always safe."""
        t0 = time.monotonic()
        try:
            if self.alive():
                try:
                    self.send(self.poweroff_cmd + "\n")
                    self.proc.wait(timeout)
                except (LabError, subprocess.TimeoutExpired, OSError):
                    pass
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            for s in (self.proc.stdin, self.proc.stdout):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass
            self._reader.join(5)
            self._log.close()
            (self.workdir / "qemu.pid").unlink(missing_ok=True)
            self.timings["down"] = time.monotonic() - t0

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def qemu_command(workdir: Path, *, memory_mb: int = 2048, extra: Sequence[str] = ()) -> list[str]:
    img = workdir / "img"
    return [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi",
        "-cpu", "max",
        "-smp", "2",
        "-m", str(memory_mb),
        "-display", "none",
        "-no-reboot",
        "-monitor", "none",
        "-serial", "stdio",
        "-nic", "none",
        "-snapshot",
        "-kernel", str(img / "xen"),
        "-append", XEN_ARGS,
        "-initrd", f"{img / 'vmlinuz'} {DOM0_ARGS},{img / 'initrd-dom0.cpio.gz'}",
        "-drive", f"file={img / 'rootfs.ext4'},if=virtio,format=raw",
        *extra,
    ]  # fmt: skip


def up(
    workdir: Path,
    *,
    timeout: float = 240.0,
    progress: Progress = _noop,
    extra_qemu_args: Sequence[str] = (),
) -> Lab:
    """Boot the lab and return once dom0's toolstack is up and the console shell answers."""
    workdir = workdir.absolute()
    problems = preflight_up(workdir)
    if problems:
        raise LabError("preflight: " + reason(problems))
    cmd = qemu_command(workdir, extra=extra_qemu_args)
    err = (workdir / "qemu.stderr").open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True, cwd=workdir
    )
    err.close()
    (workdir / "qemu.pid").write_text(f"{proc.pid}\n")
    lab = Lab(workdir, proc, workdir / "console.log", progress)
    progress(f"[xenlab up] qemu pid {proc.pid}, console log {lab.console_log}")
    deadline = time.monotonic() + timeout
    try:
        for name, marker in (
            ("xen_banner", "Xen version 4.17"),
            ("dom0_initramfs", guest.INITRAMFS_MARKER),
            ("dom0_rootfs", guest.ROOTFS_MARKER),
            ("toolstack", guest.TOOLSTACK_MARKER),
            ("dom0_ready", guest.READY_MARKER),
        ):
            lab.wait_for(marker, max(1.0, deadline - time.monotonic()))
            lab.timings[name] = time.monotonic() - lab.t_start
            progress(f"[xenlab up] {name} at +{lab.timings[name]:.1f}s")
        # the shell comes up right after the marker; poll until a command round-trips
        while True:
            try:
                rc, out = lab.run("echo xenlab-ok", timeout=10, start_timeout=5)
                if rc == 0 and "xenlab-ok" in out:
                    break
            except LabTimeout:
                if time.monotonic() > deadline:
                    raise
        lab.timings["shell_ready"] = time.monotonic() - lab.t_start
        progress(f"[xenlab up] shell_ready at +{lab.timings['shell_ready']:.1f}s")
    except BaseException:
        lab.down(timeout=5)
        raise
    return lab


def kill_recorded(workdir: Path) -> bool:
    """Kill the qemu recorded in ``workdir/qemu.pid`` (for `xenlab down` from another process)."""
    pidf = workdir / "qemu.pid"
    try:
        pid = int(pidf.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        pidf.unlink(missing_ok=True)
        return False
    if not comm.startswith("qemu-system"):
        pidf.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pidf.unlink(missing_ok=True)
    return True
