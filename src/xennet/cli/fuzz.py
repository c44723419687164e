"""``xennet fuzz``: fuzzing campaigns over the parsers of peer-controlled bytes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..fuzz import ALL, TARGETS

console = Console() if sys.stdout.isatty() else Console(width=140)


def _about() -> str:
    return "; ".join(f"{n}: {t.about}" for n, t in TARGETS.items())


@click.command(
    help=f"Fuzz the parsers of peer-controlled bytes, each target in a child process. Targets: {_about()}."
)
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(0.5), help="Per target.")
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(sorted(ALL)),
    help="A target (repeat for more; default: all but the selftest-* ones).",
)
@click.option("--runs", type=click.IntRange(1), help="Stop a target after this many inputs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report here.")
@click.option(
    "--out",
    default="build/fuzz",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Corpus, logs and failing inputs: OUT/<target>/.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=2.0,
    show_default=True,
    type=click.FloatRange(1),
    help="An input running longer is a hang.",
)
@click.option(
    "--replay",
    "replay",
    multiple=True,
    type=click.Path(exists=True, dir_okay=True),
    help="Feed saved inputs (files, or a leak-N directory) to one --target in order, then check.",
)
def fuzz(
    seconds: float,
    targets: tuple[str, ...],
    runs: int | None,
    json_path: str | None,
    out: str,
    timeout_s: float,
    replay: tuple[str, ...],
) -> None:
    if importlib.util.find_spec("atheris") is None:
        click.echo("xennet fuzz: atheris is not installed (pip install -e '.[test]')", err=True)
        sys.exit(2)
    from ..fuzz import campaign, runner

    if replay:
        if len(targets) != 1:
            raise click.UsageError("--replay needs exactly one --target")
        files = [str(f) for p in map(Path, replay) for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
        sys.exit(runner.main([targets[0], "--replay", *files]))
    names = list(targets) or list(TARGETS)

    def progress(name: str, r: campaign.TargetResult) -> None:
        verdict = "FAILED" if r.failed else "ok"
        click.echo(
            f"fuzz: {name}: {r.executions} executions in {r.seconds} s, {r.crashes} crashes, "
            f"{r.hangs} hangs, {r.leaks} leaks: {verdict}"
        )
        if r.failed:
            click.echo(f"fuzz: {name}: {r.error}", err=True)
            for a in r.artifacts:
                click.echo(f"fuzz: {name}: input saved in {a}", err=True)
            click.echo(f"fuzz: {name}: log in {r.log}", err=True)

    report = campaign.run(names, Path(out), seconds, runs, timeout_s, progress)
    console.print(_table(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    if report["crashes"] or report["hangs"] or report["leaks"]:
        sys.exit(1)


def _table(report: dict[str, Any]) -> Table:
    t = Table(title="xennet fuzz", header_style="bold")
    for col in ("target", "executions", "crashes", "hangs", "leaks", "seconds"):
        t.add_column(col, justify="left" if col == "target" else "right")
    for name, r in report["targets"].items():
        t.add_row(name, *(str(r[k]) for k in ("executions", "crashes", "hangs", "leaks", "seconds")))
    t.add_row("total", *(str(report[k]) for k in ("executions", "crashes", "hangs", "leaks")), "")
    return t
