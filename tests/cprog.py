"""The one compile-and-run helper of the C checks: gcc builds a generated program, it prints
``key<TAB>value`` lines, and the caller compares them with what Python declares."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


def compile_c(source: str, name: str, out_dir: Path, flags: Sequence[str] = ()) -> Path:
    """``source`` built by gcc (-Wall, any extra ``flags``) into ``out_dir/name``; a compile error fails."""
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is not installed (scripts/apt-packages.txt)"
    src, exe = out_dir / f"{name}.c", out_dir / name
    src.write_text(source)
    cc = subprocess.run([gcc, "-Wall", *flags, str(src), "-o", str(exe)], capture_output=True, text=True)
    assert cc.returncode == 0, f"the generated program {name}.c does not compile:\n{cc.stderr[:20000]}"
    return exe


def compile_and_run(source: str, name: str, flags: Sequence[str] = ()) -> dict[str, str]:
    """Build ``source``, run it, and return what it printed as ``{key: value}`` (each key once)."""
    with tempfile.TemporaryDirectory(prefix=f"xennet-{name}-") as tmp:
        exe = compile_c(source, name, Path(tmp), flags)
        run = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=30)
    got: dict[str, str] = {}
    for line in run.stdout.splitlines():
        key, tab, value = line.partition("\t")
        assert tab, f"{name} printed a line without a tab: {line!r}"
        assert key not in got, f"{name} printed {key} twice"
        got[key] = value
    return got
