"""Fixtures for the sim platform: a throwaway world, two domains' platforms, child processes.

Everything is removed in ``finally`` blocks, so a failing test leaves no shm files,
sockets or processes behind.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from xennet.platform.sim import SimPlatform, SimWorld

SMALL = 256  # frames per test domain: 1 MiB, plenty, and quick to create


@pytest.fixture
def world() -> Iterator[SimWorld]:
    w = SimWorld.create(f"t{os.getpid()}-{secrets.token_hex(3)}")
    try:
        yield w
    finally:
        w.destroy()
        assert not os.path.exists(w.path)


@pytest.fixture
def pair(world: SimWorld) -> Iterator[tuple[SimPlatform, SimPlatform]]:
    """Domains 0 and 1, both opened in this process."""
    world.create_domain(0, nr_frames=SMALL)
    world.create_domain(1, nr_frames=SMALL)
    p0 = world.platform(0)
    try:
        p1 = world.platform(1)
        try:
            yield p0, p1
        finally:
            p1.close()
    finally:
        p0.close()


Spawn = Callable[..., multiprocessing.process.BaseProcess]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``target(*args)`` in a forked child; every child is killed and reaped afterwards."""
    ctx = multiprocessing.get_context("fork")  # fast; children re-open their domain by path
    procs: list[multiprocessing.process.BaseProcess] = []

    def start(target: Callable[..., Any], *args: Any) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
