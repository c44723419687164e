"""Run a domain program in its own OS process and get its result (or its traceback) back."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

_ctx = mp.get_context("spawn")  # a fresh interpreter: nothing inherited but what we pass


PROFILE_ENV = "XENNET_PROFILE_DIR"  # set: each domain process writes a profile of its run there


def _profiled(name: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run ``fn`` under pyinstrument (cProfile if it is not installed) when ``PROFILE_ENV`` says
    where the profiles go: ``<dir>/<process name>.html`` and ``.txt``."""
    out = os.environ.get(PROFILE_ENV)
    if not out:
        return fn(*args)
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, name)
    try:
        from pyinstrument import Profiler
    except ImportError:
        import cProfile

        prof = cProfile.Profile()
        try:
            return prof.runcall(fn, *args)
        finally:
            prof.dump_stats(base + ".prof")
    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        return fn(*args)
    finally:
        profiler.stop()
        with open(base + ".txt", "w") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
        with open(base + ".html", "w") as f:
            f.write(profiler.output_html())


def _child(conn: Connection, name: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", _profiled(name, fn, args)))
    except BaseException:  # report everything, including KeyboardInterrupt, then die
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class DomainProcess:
    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.name = name
        self._recv, send = _ctx.Pipe(duplex=False)
        self.proc = _ctx.Process(target=_child, args=(send, name, fn, args), name=name, daemon=True)
        self.proc.start()
        send.close()
        self._result: tuple[str, Any] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def poll(self) -> bool:
        """True once the process has reported (or died without reporting)."""
        if self._result is None and self._recv.poll():
            try:
                self._result = self._recv.recv()
            except EOFError:
                self._result = ("error", f"{self.name} died with exit code {self.proc.exitcode}")
        if self._result is None and not self.proc.is_alive() and not self._recv.poll():
            self._result = ("error", f"{self.name} died with exit code {self.proc.exitcode}")
        return self._result is not None

    def result(self, timeout: float) -> Any:
        if self._result is None and self._recv.poll(timeout):
            self.poll()
        if self._result is None:
            self.kill()
            raise TimeoutError(f"{self.name} did not finish in {timeout:.0f} s")
        self.proc.join(5)
        kind, value = self._result
        if kind != "ok":
            raise RuntimeError(f"{self.name} failed:\n{value}")
        return value

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def stop(self, timeout: float = 20) -> Any:
        """SIGTERM (the domain programs unwind on it), then its report; a failure or a
        timeout comes back as ``{"error": ...}`` so that a teardown can go on."""
        if self.proc.is_alive() and self.pid is not None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.result(timeout)
        except Exception as exc:  # report, keep tearing down
            return {"error": str(exc)}
