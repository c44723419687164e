"""Boot the lab (Xen 4.17 + Debian dom0 under QEMU/TCG) and drive dom0 over its serial console."""

from __future__ import annotations

import base64
import gzip
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

from . import domu, guest
from .preflight import preflight_up, reason

Progress = Callable[[str], None]

XEN_ARGS = (
    "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M loglvl=all guest_loglvl=all noreboot "
    # TCG's SMAP/SMEP emulation makes Xen's own accesses to the PV dom0 kernel stack fault
    "smap=0 smep=0 "
    # -cpu max says AMD, so Xen would switch PV vCPUs' FPU state lazily (CR0.TS + #NM), which TCG
    # does not emulate faithfully: guests then compute with another vCPU's SSE registers (wrong
    # sha256 sums, corrupt data in both directions of a transfer; dom0 processes crash).  Eager
    # switching avoids #NM altogether.
    "spec-ctrl=eager-fpu"
)
DOM0_ARGS = "console=hvc0 earlyprintk=xen loglevel=5"


_COMMAND_OUTPUT = re.compile(r"XLB_([0-9a-f]+)\n(.*?)\nXLE_\1 rc=(\d+)", re.S)


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
        #: sent before each command line: the tty's line-kill character (^U) (not for a pipe)
        self.line_kill = "\x15"
        #: seconds without an answer to a command line before a bare newline follows it
        self.nudge_after = 10.0
        #: how many command lines had to be sent again (lost characters on the serial line)
        self.retransmits = 0
        self.send_delay = 0.03
        self._domu_t0: dict[str, float] = {}  # name -> when start_domu ran xl create
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

    def console_messages(self, lines: int = 80) -> str:
        """The console tail with the output of run() commands folded away (a count per stretch): what
        Xen and the dom0 kernel said, for failure reports."""
        text = _COMMAND_OUTPUT.sub("\0", self.console().replace("\r", ""))
        out: list[str] = []
        folded = 0
        for ln in [*text.splitlines(), ""]:
            if ln.strip("\0 ") == "" and "\0" in ln:
                folded += ln.count("\0")
                continue
            if not ln.strip():
                continue
            if folded:
                out.append(f"[{folded} dom0 command{'s' if folded > 1 else ''}]")
                folded = 0
            out.append(ln)
        if folded:
            out.append(f"[{folded} dom0 command{'s' if folded > 1 else ''}]")
        return "\n".join(out[-lines:])

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

    def send(self, text: str, slower: int = 0) -> None:
        """Type ``text`` into the console, paced: Xen's serial RX ring is small and, under TCG, dom0
        drains it slowly, so a fast burst loses characters.  Each step of ``slower`` halves the
        burst and adds a pause: a loaded host drains the ring slower still."""
        assert self.proc.stdin is not None
        data = text.encode()
        chunk = max(4, self.send_chunk >> slower)
        delay = self.send_delay * (1 + slower)
        try:
            for i in range(0, len(data), chunk):
                if i:
                    time.sleep(delay)
                self.proc.stdin.write(data[i : i + chunk])
                self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise LabError("qemu console closed") from e

    # -- commands ----------------------------------------------------------------------------------
    def run(
        self, cmd: str, timeout: float = 60.0, *, start_timeout: float = 30.0, retries: int = 6
    ) -> tuple[int, str]:
        """Run ``cmd`` with bash in dom0; returns (exit code, combined stdout+stderr, CRs removed).

        The command goes as one line ``xlrun TAG TIMEOUT MD5 BASE64`` (guest.CONSOLE_RC): no quoting
        issues, and the typed line never contains the joined marker text.  dom0 checks the md5 over
        the whole line first; a line that lost characters on the serial line runs nothing and is
        sent again, each time in smaller, slower bursts (up to ``retries`` times, then rc 255 and
        ``XLCORRUPT``).  The command runs under
        coreutils ``timeout`` (rc 124 when that kills it), stdin /dev/null, and its output is taken
        between unique begin/end markers.
        """
        b64 = base64.b64encode(cmd.encode()).decode()
        if len(b64) > 3000:
            raise LabError("command too long for the serial console line buffer (max ~2 KiB)")
        tmo = max(1, int(timeout))
        with self._lock:
            for attempt in range(retries + 1):
                tag = secrets.token_hex(6)
                md5 = hashlib.md5(f"{tag} {tmo} {b64}".encode()).hexdigest()
                start = self._mark()
                # line_kill (^U) first: drops what a lost newline may have left in dom0's line buffer
                self.send(f"{self.line_kill}xlrun {tag} {tmo} {md5} {b64}\n", slower=attempt)
                ack = re.compile(rb"XLB_" + tag.encode() + rb"\r*\n|XLNAK|command not found")
                try:
                    b = self.wait_for(ack, min(self.nudge_after, start_timeout), start)
                except LabTimeout:
                    # silence: if the newline was lost, a bare one completes the line (and if dom0
                    # is only slow, an empty line does no harm)
                    self.send("\n")
                    b = self.wait_for(ack, max(0.0, start_timeout - self.nudge_after), start)
                if b.group(0).startswith(b"XLB_"):
                    break
                self.progress(f"[xenlab] console line garbled in transit (attempt {attempt + 1}), resending")
                self.retransmits += 1
            else:
                return 255, "XLCORRUPT"
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
        """Copy small ``data`` to ``path`` in dom0 over the console, making its directory (gzipped;
        ~1 KB/s of compressed data: for big trees rebuild the image)."""
        q = shlex.quote(path)
        md5 = hashlib.md5(data).hexdigest()
        gz = gzip.compress(data, 9, mtime=0)
        step = 1400  # base64 of a chunk plus the command, base64ed again by run(), stays under ~3000
        chunks = [gz[i : i + step] for i in range(0, len(gz), step)]
        for i, chunk in enumerate(chunks):
            b64 = base64.b64encode(chunk).decode()
            cmd = f"echo {b64} | base64 -d >> {q}.gz"
            if i == 0:
                cmd = f'mkdir -p "$(dirname {q})" && rm -f {q}.gz && {cmd}'
            if i == len(chunks) - 1:
                cmd += f" && gzip -dc {q}.gz > {q}.part && rm -f {q}.gz"
                cmd += f' && [ "$(md5sum < {q}.part)" = "{md5}  -" ]'
                cmd += f" && chmod {mode:o} {q}.part && mv {q}.part {q}"
            self.check(cmd)

    def read_text(self, path: str, limit: int = 64 * 1024, timeout: float = 60.0) -> str:
        """The last ``limit`` bytes of text file ``path`` in dom0 ("" if missing), CRs removed, bytes
        other than tab, newline and printable ASCII shown as '?'.  The length is checked against dom0's
        count (one retry), so characters lost on the serial line do not go unnoticed."""
        q = shlex.quote(path)
        cmd = (
            f"[ -e {q} ] || exit 3; f=$(mktemp); tail -c {int(limit)} {q} | tr -d '\\r' "
            f"| LC_ALL=C tr -c '\\11\\12\\40-\\176' '?' >$f; cat $f; "
            "printf '\\nXLLEN=%d\\n' $(wc -c <$f); rm -f $f"
        )
        out = ""
        for _attempt in range(2):
            rc, out = self.run(cmd, timeout)
            if rc == 3:
                return ""
            if rc != 0:
                raise LabError(f"reading {path} in dom0 failed rc={rc}: {out[-500:]}")
            body, sep, tail = out.rpartition("\nXLLEN=")
            if sep and tail.strip().isdigit() and len(body.encode()) == int(tail.strip()):
                return body
        return out + f"\n[xenlab: {path} came through the console incomplete]\n"

    def check(self, cmd: str, timeout: float = 60.0) -> str:
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise LabError(f"dom0 command failed rc={rc}: {cmd}\n{out}")
        return out

    # -- domUs ---------------------------------------------------------------------------------------
    def start_domu(
        self,
        name: str,
        script: str,
        *,
        vifs: Sequence[str] = (),
        kernel_netfront: bool = True,
        memory_mb: int = 320,
        vcpus: int = 1,
        before_unpause: Callable[[int], None] | None = None,
        timeout: float = 180.0,
    ) -> int:
        """Create PV domU ``name`` (``vcpus`` virtual CPUs) paused, give it ``script`` (run by
        bash as its job), call ``before_unpause(domid)``, unpause it; returns the domid.  See
        :mod:`xenlab.domu`."""
        data = domu.check_script(script)
        cfg = domu.xl_config(
            name, vifs=vifs, kernel_netfront=kernel_netfront, memory_mb=memory_mb, vcpus=vcpus
        )
        d, log = domu.DOM0_DOMU_DIR, domu.console_log(name)
        self._domu_t0.pop(name, None)
        self.write_file(f"{d}/{name}.sh", data)
        cfg64 = base64.b64encode(cfg.encode()).decode()
        t0 = time.monotonic()
        rc, out = self.run(
            # a leftover of an earlier (failed) run goes first
            f"xl domid {name} >/dev/null 2>&1 && xl destroy {name}\n"
            f"echo {cfg64} | base64 -d > {d}/{name}.cfg || exit 1\n"
            # an old log of the same name would satisfy wait_domu at once: move it away
            f"[ -e {log} ] && mv -f {log} {log}.old\n"
            f"xl create -p {d}/{name}.cfg >{d}/{name}.create.log 2>&1 "
            f"|| {{ cat {d}/{name}.create.log; xl destroy {name} 2>/dev/null; exit 1; }}\n"
            f"D=$(xl domid {name}) || exit 1\n"
            # -R: raw, no escape processing; "x" keeps trailing newlines through $(...)
            f'v=$(cat {d}/{name}.sh; echo x); xenstore-write -R "/local/domain/$D/{guest.DOMU_SCRIPT_KEY}" '
            f'"${{v%x}}" || {{ xl destroy {name}; exit 1; }}\n'
            "echo XLDOMID=$D",
            timeout,
        )
        m = re.search(r"XLDOMID=(\d+)", out)
        if rc != 0 or m is None:
            raise LabError(f"xl create {name} failed rc={rc}:\n{out[-3000:]}")
        domid = int(m.group(1))
        dt = time.monotonic() - t0
        self._domu_t0[name] = t0
        self.timings[f"domu_{name}_create"] = dt
        self.progress(f"[xenlab domU] {name}: xl create -p done in {dt:.1f}s, domain {domid}")
        try:
            if before_unpause is not None:
                before_unpause(domid)
            self.check(f"xl unpause {name}", timeout=60)
        except BaseException:
            self.destroy_domu(name)
            raise
        return domid

    def domu_age(self, name: str) -> float:
        """Seconds since ``start_domu(name)`` issued ``xl create`` (NaN if it did not)."""
        t0 = self._domu_t0.get(name)
        return time.monotonic() - t0 if t0 is not None else float("nan")

    def domu_console(self, name: str, limit: int = 256 * 1024) -> str:
        """The domU's console log so far (its last ``limit`` bytes; "" before xenconsoled made it)."""
        return self.read_text(domu.console_log(name), limit)

    def wait_domu(self, name: str, marker: str, timeout: float = 180.0) -> str:
        """Wait until ``marker`` shows in the domU's console; returns that console.

        Raises LabError early if the domU finished its script (``=== XENLAB DOMU DONE``) or vanished
        without printing ``marker``, LabTimeout after ``timeout``; both with the console's tail."""
        log = domu.console_log(name)
        qm, qdone = shlex.quote(marker), shlex.quote(guest.DOMU_DONE_MARKER)
        t0 = time.monotonic()
        deadline = t0 + timeout
        # The polling runs in dom0, in slices of a few seconds; only the verdict crosses the serial
        # line.  The host's clock decides the timeout: dom0's clock is not to be trusted under TCG.
        while True:
            polls = max(2, min(40, int((deadline - time.monotonic()) * 2)))
            loop = (
                f"n=0; while [ $n -lt {polls} ]; do\n"
                f"  if grep -aqF -- {qm} {log} 2>/dev/null; then echo XLW=found; exit 0; fi\n"
                f"  if grep -aqF -- {qdone} {log} 2>/dev/null; then\n"
                f"    grep -aqF -- {qm} {log} && echo XLW=found || echo XLW=done; exit 0; fi\n"
                f"  if [ $((n % 6)) = 5 ] && ! xl domid {name} >/dev/null 2>&1; then\n"
                f"    grep -aqF -- {qm} {log} 2>/dev/null && echo XLW=found || echo XLW=gone; exit 0; fi\n"
                "  n=$((n+1)); sleep 0.5\n"
                "done\n"
                "echo XLW=wait"
            )
            rc, out = self.run(loop, polls * 2 + 60)
            # 124: dom0's `timeout` cut the slice short (a busy dom0 polls slowly): just poll again
            verdict = out.strip().rpartition("XLW=")[2] if rc == 0 else "wait" if rc == 124 else f"rc={rc}"
            if verdict != "wait" or time.monotonic() >= deadline:
                break
        console = self.domu_console(name)
        if verdict == "found":
            self.progress(
                f"[xenlab domU] {name}: {marker!r} {self.domu_age(name):.1f}s after xl create "
                f"(waited {time.monotonic() - t0:.1f}s)"
            )
            return console
        tail = "\n".join(console.splitlines()[-40:])
        what = {
            "done": "finished its script",
            "gone": "is gone (crashed, powered off or destroyed)",
        }.get(verdict)
        if what is not None:
            raise LabError(f"domU {name} {what} without printing {marker!r}; console tail:\n{tail}")
        if verdict == "wait":
            raise LabTimeout(
                f"timeout {timeout:.0f}s waiting for {marker!r} from domU {name}; console tail:\n{tail}"
            )
        raise LabError(f"waiting for domU {name} failed ({verdict}): {out[-500:]}\nconsole tail:\n{tail}")

    def destroy_domu(self, name: str, timeout: float = 60.0) -> None:
        """Destroy domU ``name`` if it exists (safe when it is already gone)."""
        domu.check_name(name)
        self.run(f"xl domid {name} >/dev/null 2>&1 && xl destroy {name}; true", timeout)

    def consoles(self, domu_limit: int = 16 * 1024) -> str:
        """For failure reports: the Xen + dom0 console tail, `xl list`, dom0's and Xen's message tails and
        every domU console log (each cut to ``domu_limit`` bytes).  Never raises."""
        parts = ["===== Xen + dom0 serial console (tail) =====", self.console_messages(80)]
        if not self.alive():
            parts.append(f"===== qemu has exited (rc={self.proc.poll()}) =====")
            return "\n".join(parts)
        try:
            _rc, out = self.run(
                "echo '===== xl list'; xl list; echo '===== xl dmesg (tail)'; xl dmesg | tail -n 25; "
                "echo '===== dom0 dmesg (tail)'; dmesg | tail -n 25",
                timeout=60,
            )
            parts.append(out.rstrip())
            _rc, names = self.run(f"ls {domu.CONSOLE_DIR}/guest-*.log 2>/dev/null", timeout=30)
            for path in names.split():
                parts.append(f"===== domU console {path} (tail) =====")
                parts.append(self.read_text(path, domu_limit).rstrip())
        except Exception as e:  # noqa: BLE001 - a failure report must not fail
            parts.append(f"===== (collecting dom0 state failed: {e}) =====")
        return "\n".join(parts)

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
        "-smp", str(guest.LAB_CPUS),
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
        # the same image again, read-only (dom0's /dev/vdb): the domUs' root disk. Each drive gets its
        # own -snapshot overlay, so the domUs see the pristine image whatever dom0 writes to /dev/vda.
        "-drive", f"file={img / 'rootfs.ext4'},if=virtio,format=raw,readonly=on",
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
