"""``xennet fuzz``: every target runs and reports its counts, and a harness that fails on
purpose (the selftest-* targets) is reported as a crash, a leak or a hang, with the input
that did it saved and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xennet.fuzz import TARGETS
from xennet.fuzz.selftest import MAGIC

pytestmark = pytest.mark.slow  # child processes and seconds-long campaigns: the multi-process stage

pytest.importorskip("atheris")

KEYS = {"executions", "crashes", "hangs", "leaks", "targets"}


def fuzz(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xennet.cli.main",
            "fuzz",
            "--out",
            str(tmp_path / "out"),
            "--json",
            str(report),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, json.loads(report.read_text())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_runs_clean_for_a_few_seconds(tmp_path: Path, target: str) -> None:
    proc, report = fuzz(tmp_path, "--seconds", "3", "--target", target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert KEYS <= set(report)
    one = report["targets"][target]  # type: ignore[index]
    assert report["executions"] == one["executions"] > 0
    assert (report["crashes"], report["hangs"], report["leaks"]) == (0, 0, 0)
    assert (tmp_path / "out" / target / "corpus").is_dir()


@pytest.mark.parametrize(
    ("kind", "key", "prefix"),
    [("crash", "crashes", "crash-"), ("leak", "leaks", "leak-"), ("hang", "hangs", "timeout-")],
)
def test_a_broken_harness_is_caught_and_its_input_saved(
    tmp_path: Path, kind: str, key: str, prefix: str
) -> None:
    target = f"selftest-{kind}"
    proc, report = fuzz(tmp_path, "--seconds", "20", "--timeout", "1", "--target", target)
    assert proc.returncode != 0
    one = report["targets"][target]  # type: ignore[index]
    assert report[key] == one[key] == 1 and one["executions"] > 0
    (saved,) = one["artifacts"]
    assert Path(saved).name.startswith(prefix) and saved in proc.stderr
    inputs = sorted(Path(saved).iterdir()) if Path(saved).is_dir() else [Path(saved)]
    assert any(len(p.read_bytes()) > 1 and p.read_bytes()[1] == MAGIC for p in inputs)


def test_a_saved_crash_replays_as_a_crash(tmp_path: Path) -> None:
    _proc, report = fuzz(tmp_path, "--seconds", "20", "--target", "selftest-crash")
    (saved,) = report["targets"]["selftest-crash"]["artifacts"]  # type: ignore[index]
    replay = subprocess.run(
        [sys.executable, "-m", "xennet.cli.main", "fuzz", "--target", "selftest-crash", "--replay", saved],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode != 0 and "magic byte" in replay.stderr


def test_without_atheris_one_clear_line() -> None:
    """A Python whose atheris cannot be imported: one line on stderr, exit 2, no traceback."""
    code = (
        "import sys, importlib.util as u; real = u.find_spec;"
        "u.find_spec = lambda n, *a: None if n == 'atheris' else real(n, *a);"
        "from xennet.cli.main import main; sys.argv = ['xennet', 'fuzz', '--seconds', '1']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x and not x.startswith("xennet: running the pure")]
    assert lines == ["xennet fuzz: atheris is not installed (pip install -e '.[test]')"]
