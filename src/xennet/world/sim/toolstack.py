"""The sim world's dom0 toolstack, and how a domain program opens its side of the world.

``SimToolstack`` does what xl and libxl do on a real host: run xenstored, create domains
(here: shared-memory files), introduce them, write vif directories, and clean all of it up.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...platform.sim import SimPlatform, SimWorld
from ...xenbus.paths import VifPaths
from ...xenbus.toolstack import VifSpec, attach_vif, detach_vif
from ...xenstore import daemon as xenstored
from ...xenstore.client import XenstoreClient
from .procs import DomainProcess


class SimToolstack:
    def __init__(self, prefix: str = "xennet-") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.sock = str(self.tmp / "xenstored.sock")
        self.daemon = xenstored.spawn(self.sock)
        self.world: SimWorld | None = None
        self.xs: XenstoreClient | None = None
        self.procs: list[DomainProcess] = []
        try:
            self.world = SimWorld.create(xenstore_socket=self.sock)
            self.xs = XenstoreClient(self.sock)  # dom0's privileged connection
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        assert self.world is not None
        return self.world.path

    def domain(self, domid: int, nr_frames: int = 8192) -> None:
        assert self.world is not None and self.xs is not None
        self.world.create_domain(domid, nr_frames=nr_frames)
        if domid:
            self.xs.introduce(domid, 0, 0)

    def attach(self, paths: VifPaths, spec: VifSpec | None = None) -> None:
        assert self.xs is not None
        attach_vif(self.xs, paths, spec or VifSpec())

    def detach(self, paths: VifPaths) -> None:
        assert self.xs is not None
        detach_vif(self.xs, paths)

    def start(self, name: str, fn: Any, *args: Any) -> DomainProcess:
        proc = DomainProcess(name, fn, *args)
        self.procs.append(proc)
        return proc

    def accounting(self, *domids: int) -> dict[int, dict[str, int]]:
        assert self.world is not None
        return {d: asdict(self.world.accounting(d)) for d in domids}

    def close(self) -> None:
        """Kill domain processes, remove the world and xenstored: safe to call twice."""
        for p in self.procs:
            p.kill()
        self.procs.clear()
        if self.xs is not None:
            self.xs.close()
            self.xs = None
        if self.world is not None:
            self.world.destroy()
            self.world = None
        if self.daemon is not None:
            xenstored.stop(self.daemon)
            self.daemon = None  # type: ignore[assignment]
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> SimToolstack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_domain(world_path: str, domid: int) -> Iterator[tuple[SimPlatform, XenstoreClient]]:
    """Inside a domain's process: its platform and its own xenstore connection."""
    platform = SimWorld.attach(world_path).platform(domid)
    try:
        xs = XenstoreClient(platform.xenstore_path())
    except BaseException:
        platform.close()
        raise
    try:
        yield platform, xs
    finally:
        xs.close()
        platform.close()
