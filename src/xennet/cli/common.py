"""What several command groups share: the console, counter tables, and signal handling."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console() if sys.stdout.isatty() else Console(width=140)  # piped: keep tables readable


def counter_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        if isinstance(value, dict):
            if not value:
                table.add_row(key, "0")
            for reason, n in value.items():
                table.add_row(f"{key} [{reason}]", str(n))
        else:
            table.add_row(key, str(value))
    return table


def sigterm_unwinds() -> None:
    """SIGTERM unwinds this process like Ctrl-C, so its namespaces, TAPs, domain processes and
    world are torn down; a process forked from it later just exits, as with no handler."""
    import signal

    parent = os.getpid()

    def on_term(_signum: int, _frame: object) -> None:
        if os.getpid() != parent:
            os._exit(143)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)


def stop_flag() -> Callable[[], bool]:
    """True once SIGTERM or SIGINT arrived: the drivers then close in order."""
    import signal

    stopped: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: bool(stopped)
