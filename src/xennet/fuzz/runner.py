"""One fuzz target under atheris, in its own process (``campaign.py`` starts it).

    python3 -m xennet.fuzz.runner TARGET --out DIR --status FILE --seconds S [--runs N] [LIBFUZZER ARGS]
    python3 -m xennet.fuzz.runner TARGET --replay FILE...

The runner, not libFuzzer, decides when the campaign is over (``--seconds``, ``--runs``):
the harness must get its last ``check`` -- teardown and the accounts back at zero -- before
the process ends.  Every 1000 inputs, at each leak and at the end it writes ``--status``
(JSON: executions, and the leak if one was found), so the campaign knows how far a child
got even when a crash or a hang ended it.  A leak ends the run with ``LEAK_EXIT``; the inputs
since the previous clean check are saved in DIR/leak-N/ (the leak is among them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from . import ALL
from .harness import Harness, Leak, rss_mb

LEAK_EXIT = 3
STATUS_EVERY = 1000


def _load(name: str, instrument: bool) -> Harness:
    target = ALL[name]
    if instrument and target.instrument:
        import atheris  # type: ignore[import-untyped]

        with atheris.instrument_imports(include=list(target.instrument)):
            for mod in target.instrument:
                importlib.import_module(mod)
            module = importlib.import_module(target.module)
    else:
        module = importlib.import_module(target.module)
    harness: Harness = module.Harness(name)
    return harness


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class _Run:
    def __init__(self, h: Harness, args: argparse.Namespace) -> None:
        self.h = h
        self.out = Path(args.out)
        self.status = Path(args.status)
        self.deadline = time.monotonic() + args.seconds
        self.runs = args.runs
        self.rss_growth = args.rss_growth_mb
        self.n = 0
        self.window: deque[bytes] = deque(maxlen=h.check_every)
        self.rss_base: float | None = None

    def write_status(self, **extra: Any) -> None:
        _write_json(self.status, {"executions": self.n, "rss_mb": round(rss_mb(), 1), **extra})

    def one(self, data: bytes) -> None:
        self.h.one(data)
        self.n += 1
        self.window.append(data)
        if self.n % self.h.check_every == 0:
            self.check()
        if self.n % STATUS_EVERY == 0:
            self.write_status()
        if self.n >= self.runs or time.monotonic() >= self.deadline:
            self.check()
            self.h.close()
            self.write_status(done=True)
            os._exit(0)  # libFuzzer would print its stats and exit(); we are done already

    def check(self) -> None:
        try:
            self.h.check()
            rss = rss_mb()
            if self.rss_base is None:
                self.rss_base = rss  # after the first round: imports and caches are in
            elif rss - self.rss_base > self.rss_growth:
                raise Leak(f"rss grew {rss - self.rss_base:.0f} MiB (bound {self.rss_growth} MiB)")
        except Leak as leak:
            where = self.out / f"leak-{self.n}"
            where.mkdir(parents=True, exist_ok=True)
            for i, data in enumerate(self.window):
                (where / f"input-{i:04d}").write_bytes(data)
            self.write_status(leak=leak.what, leak_inputs=str(where))
            print(f"xennet-fuzz: LEAK after {self.n} inputs: {leak.what}; inputs in {where}", flush=True)
            os._exit(LEAK_EXIT)


def replay(h: Harness, files: list[str]) -> int:
    """Feed saved inputs in order, then check: 0 when nothing failed."""
    for f in files:
        h.one(Path(f).read_bytes())
    h.check()
    h.close()
    print(f"xennet-fuzz: {h.name}: {len(files)} inputs replayed, no crash, no leak")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m xennet.fuzz.runner")
    p.add_argument("target", choices=sorted(ALL))
    p.add_argument("--out", default=".")
    p.add_argument("--status", default="status.json")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--runs", type=int, default=2**62)
    p.add_argument("--rss-growth-mb", type=float, default=512.0)
    p.add_argument("--replay", nargs="+", metavar="FILE")
    args, libfuzzer = p.parse_known_args(argv)
    logging.disable(logging.CRITICAL)  # hostile input makes drivers log by design: not at this rate
    if args.replay:
        return replay(_load(args.target, instrument=False), args.replay)
    import atheris

    h = _load(args.target, instrument=True)
    out = Path(args.out)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(h.seeds()):
        path = corpus / f"seed-{i:03d}"
        if not path.exists():
            path.write_bytes(seed)
    run = _Run(h, args)
    run.write_status()
    flags = [
        f"-max_len={h.max_len}",
        f"-artifact_prefix={out}/",
        f"-max_total_time={int(args.seconds) + 60}",  # a backstop only: the runner ends the run
        "-print_final_stats=1",
        *libfuzzer,
        str(corpus),
    ]
    atheris.Setup([sys.argv[0], *flags], run.one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
