"""The README's layer order is the imports' order: no module imports a layer above its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "xennet"


def layers() -> dict[str, int]:
    """``abi`` → ``core`` → … → ``cli`` from the README, one rank per arrow; ``a`` / ``b``
    share a rank."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("`abi` →"))
    rank: dict[str, int] = {}
    for i, step in enumerate(line.split("→")):
        for name in re.findall(r"`([a-z_]+)`", step.split("(")[0]):
            rank[name] = i
    return rank


def imported_packages(path: Path) -> set[str]:
    """The top-level xennet packages ``path`` imports (absolute or relative)."""
    rel = path.relative_to(SRC).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # "from .. import x": the names are packages
                    out.update(a.name for a in node.names)
                else:
                    out.add(parts[0])
            elif node.module and node.module.startswith("xennet."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("xennet."))
    return out


def test_every_import_goes_down_the_readme_order() -> None:
    rank = layers()
    assert len(rank) >= 15, rank
    wrong: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        pkg = path.relative_to(SRC).parts[0]
        if pkg not in rank:
            continue  # top-level modules (__init__, __main__) and the lab, which imports nothing of ours
        for target in imported_packages(path) & rank.keys():
            if rank[target] > rank[pkg]:
                wrong.append(f"{path.relative_to(SRC)} ({pkg}) imports {target}")
    assert wrong == [], "\n".join(wrong)


def test_every_package_has_a_place_in_the_order() -> None:
    rank = layers()
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - rank.keys() <= {"xenlab"}, packages - rank.keys()


def test_the_readme_table_names_every_folder() -> None:
    """'Where things are' has a row for every package folder of the source tree."""
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_/.]+)` \|", text, flags=re.M)
    # a row names a folder (``world/sim/``) or a file in one (``ring/shared.py``)
    named = {r.rstrip("/") if r.endswith("/") else r.rsplit("/", 1)[0] for r in rows if "/" in r}
    folders = {str(p.relative_to(SRC)) for p in SRC.rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    # a folder is covered by its own row or by its parent's
    missing = sorted(f for f in folders if f not in named and f.rsplit("/", 1)[0] not in named)
    assert missing == [], missing
