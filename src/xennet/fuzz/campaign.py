"""A fuzz campaign: each target in a child process (``runner.py``), one after the other.

The child can die any way it likes -- an exception atheris reports (a crash), libFuzzer's
per-input alarm (a hang), the runner's leak exit, libFuzzer's RSS limit, or no answer at all
(killed at the wall-clock bound: a hang) -- and the campaign counts it, names the saved
input and goes on to the next target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import xennet

from .runner import LEAK_EXIT

# libFuzzer's artifact prefixes, by what they mean here
_CRASH, _HANG, _OOM = "crash-", "timeout-", "oom-"
_PROGRESS = re.compile(r"^#(\d+)\s", re.M)
_STAT = re.compile(r"^stat::number_of_executed_units:\s*(\d+)", re.M)
SLACK_S = 120  # start-up and the last check, on top of --seconds, before a silent child is a hang


@dataclass
class TargetResult:
    executions: int = 0
    crashes: int = 0
    hangs: int = 0
    leaks: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    artifacts: list[str] = field(default_factory=list)
    error: str = ""  # the first line of what went wrong
    log: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.crashes or self.hangs or self.leaks)


def _artifacts(out: Path) -> set[Path]:
    return {p for p in out.iterdir() if p.name.startswith((_CRASH, _HANG, _OOM, "leak-"))}


def _first_error(log: str) -> str:
    """The line that says what went wrong: the exception, the leak, the alarm."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            tail = [x for x in lines[i + 1 :] if x and not x.startswith((" ", "Traceback"))]
            return tail[0].strip() if tail else line.strip()
        if line.startswith("xennet-fuzz: LEAK") or "ALARM:" in line or "ERROR: libFuzzer" in line:
            return line.strip()
    return lines[-1].strip() if lines else ""


def run_target(
    name: str,
    out_root: Path,
    seconds: float,
    runs: int | None = None,
    timeout_s: float = 2.0,
    rss_limit_mb: int = 2048,
    rss_growth_mb: float = 512.0,
) -> TargetResult:
    out = (out_root / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    status = out / "status.json"
    status.unlink(missing_ok=True)
    log_path = out / "fuzz.log"
    before = _artifacts(out)
    cmd = [
        sys.executable, "-m", "xennet.fuzz.runner", name,
        "--out", str(out), "--status", str(status), "--seconds", str(seconds),
        "--rss-growth-mb", str(rss_growth_mb),
        *(["--runs", str(runs)] if runs else []),
        f"-timeout={max(1, round(timeout_s))}", f"-rss_limit_mb={rss_limit_mb}",
    ]  # fmt: skip
    env = dict(os.environ)
    src = str(Path(xennet.__file__).resolve().parents[1])  # the child imports this very xennet
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    r = TargetResult()
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        try:
            r.exit_code = proc.wait(timeout=seconds + SLACK_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            r.hangs += 1
            r.error = f"no answer after {seconds + SLACK_S:.0f} s: killed"
    r.seconds = round(time.monotonic() - start, 1)
    text = log_path.read_text(errors="replace")
    r.log = str(log_path)
    st: dict[str, Any] = json.loads(status.read_text()) if status.exists() else {}
    counted = [int(st.get("executions", 0)), *(int(x) for x in _PROGRESS.findall(text))]
    counted += [int(x) for x in _STAT.findall(text)]
    r.executions = max(counted)
    new = sorted(_artifacts(out) - before)
    r.artifacts = [str(p) for p in new]
    r.crashes += sum(p.name.startswith(_CRASH) for p in new)
    r.hangs += sum(p.name.startswith(_HANG) for p in new)
    r.leaks += sum(p.name.startswith((_OOM, "leak-")) for p in new)
    if r.exit_code == LEAK_EXIT and not any(p.name.startswith("leak-") for p in new):
        r.leaks += 1
    if r.exit_code not in (0, None) and not r.failed:
        r.crashes += 1  # it died without saying why: a crash of the harness itself
    if r.failed and not r.error:
        r.error = _first_error(text)
    return r


def run(
    targets: list[str],
    out_root: Path,
    seconds: float,
    runs: int | None = None,
    timeout_s: float = 2.0,
    progress: Any = None,
) -> dict[str, Any]:
    """Run each target in turn; the report (totals and per target) as a JSON-ready dict."""
    per: dict[str, TargetResult] = {}
    for name in targets:
        per[name] = run_target(name, out_root, seconds, runs, timeout_s)
        if progress is not None:
            progress(name, per[name])
    total = {k: sum(getattr(r, k) for r in per.values()) for k in ("executions", "crashes", "hangs", "leaks")}
    return {
        **total,
        "seconds_per_target": seconds,
        "runs_per_target": runs,
        "input_timeout_s": timeout_s,
        "targets": {name: asdict(r) for name, r in per.items()},
    }
