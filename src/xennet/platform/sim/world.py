"""The sim world: a directory of domains, and one domain's platform opened from it.

No hypervisor process: every service runs in the caller's process (like a hypercall)
against the other domains' files.  Layout of a world directory::

    world.json        configuration (xenstore socket)
    d<domid>.mem      the domain: header, tables, memory (see layout.py)
    d<domid>.evtchn   its event channel socket, bound by the domain's process

The toolstack (a test, the CLI) creates the world and the domains; each domain's
process opens its platform with ``SimWorld.attach(path).platform(domid)``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import struct
import tempfile
import weakref
from typing import Any

from ..base import Accounting, EventChannels, GrantMapper, GrantTable, Memory, PlatformError
from .evtchn import SimEventChannels, close_all_ports, socket_path
from .grants import DOMID_FIRST_RESERVED, Domains, SimGrantMapper, SimGrantTable, release_maptrack
from .layout import PID_OFF, Layout
from .memory import SimMemory
from .shm import DomainFile, write_new_domain_file

_CONFIG = "world.json"
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1


def _default_root() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class SimWorld:
    """A handle on a world directory.  Holds no open files, so it pickles as its path."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        try:
            with open(os.path.join(self.path, _CONFIG)) as f:
                config = json.load(f)
        except FileNotFoundError:
            raise PlatformError(f"{self.path}: not a sim world") from None
        self.xenstore_socket: str = config["xenstore_socket"]

    @classmethod
    def create(
        cls, name: str | None = None, *, root: str | None = None, xenstore_socket: str | None = None
    ) -> SimWorld:
        """A new empty world ``<root>/xennet-<name>`` (root: /dev/shm)."""
        name = name or f"{os.getpid()}-{secrets.token_hex(4)}"
        path = os.path.join(root or _default_root(), f"xennet-{name}")
        if len(socket_path(path, DOMID_FIRST_RESERVED - 1)) > _SUN_PATH_MAX:
            raise PlatformError(f"{path}: too long for the event channel socket paths")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise PlatformError(f"{path}: world exists") from None
        config = {"version": 1, "xenstore_socket": xenstore_socket or os.path.join(path, "xenstored.sock")}
        tmp = os.path.join(path, f".{_CONFIG}.tmp")
        with open(tmp, "w") as f:
            json.dump(config, f)
        os.rename(tmp, os.path.join(path, _CONFIG))
        return cls(path)

    @classmethod
    def attach(cls, path: str) -> SimWorld:
        return cls(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (SimWorld.attach, (self.path,))

    def __enter__(self) -> SimWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"SimWorld({self.path!r})"

    # -- domains ----------------------------------------------------------------------

    def domain_path(self, domid: int) -> str:
        return os.path.join(self.path, f"d{domid}.mem")

    def create_domain(
        self,
        domid: int,
        *,
        nr_frames: int = 8192,
        nr_grant_entries: int = 16384,
        nr_maptrack: int = 16384,
        nr_ports: int = 1024,
    ) -> None:
        """Build the domain (as the toolstack does before starting its process)."""
        if not 0 <= domid < DOMID_FIRST_RESERVED:
            raise PlatformError(f"create_domain: bad domid {domid}")
        if self.domain_exists(domid):
            raise PlatformError(f"create_domain: domain {domid} exists")
        try:
            layout = Layout.compute(nr_frames, nr_grant_entries, nr_maptrack, nr_ports)
        except ValueError as e:
            raise PlatformError(f"create_domain: {e}") from None
        write_new_domain_file(self.domain_path(domid), domid, layout)

    def domains(self) -> list[int]:
        out = []
        for name in os.listdir(self.path):
            if name.startswith("d") and name.endswith(".mem") and name[1:-4].isdigit():
                out.append(int(name[1:-4]))
        return sorted(out)

    def domain_exists(self, domid: int) -> bool:
        return os.path.exists(self.domain_path(domid))

    def _open(self, domid: int) -> DomainFile:
        try:
            return DomainFile(self.domain_path(domid), domid)
        except FileNotFoundError:
            raise PlatformError(f"no domain {domid} in {self.path}") from None

    def domain_alive(self, domid: int) -> bool:
        """Whether a process has domain ``domid``'s platform open (holds its alive lock)."""
        try:
            df = DomainFile(self.domain_path(domid), domid)
        except FileNotFoundError:
            return False
        try:
            return not df.destroyed and df.alive_elsewhere()
        finally:
            df.close()

    def accounting(self, domid: int) -> Accounting:
        """What ``domid`` holds now, read from its file: works from any process, dead or alive."""
        df = self._open(domid)
        try:
            return df.accounting()
        finally:
            df.close()

    def destroy_domain(self, domid: int) -> None:
        """Tear down a domain whose process is gone: release the grants it mapped, unbind
        its peers' event channels, and remove its files.  Its pages stay readable in the
        processes that still map them (Xen keeps such a domain as a zombie)."""
        df = self._open(domid)
        domains = Domains(self.path, df)
        try:
            if df.alive_elsewhere():
                raise PlatformError(f"destroy_domain: domain {domid} is still running")
            release_maptrack(df, domains)
            close_all_ports(df, domains)
            df.mark_destroyed()  # openers that cached the file notice and re-open by path
            for p in (self.domain_path(domid), socket_path(self.path, domid)):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        finally:
            domains.close()
            df.close()

    def platform(self, domid: int) -> SimPlatform:
        """Open domain ``domid`` as its own process would; one process per domain at a time."""
        return SimPlatform(self, domid)

    # -- the world --------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: a world handle holds no open files (kept for symmetry)."""

    def destroy(self) -> None:
        """Remove the world and everything in it.  Idempotent; processes are not killed."""
        if not os.path.isdir(self.path):
            return
        for domid in self.domains():
            try:
                df = DomainFile(self.domain_path(domid), domid)
            except (OSError, PlatformError):
                continue
            df.mark_destroyed()
            df.close()
        shutil.rmtree(self.path, ignore_errors=True)


_live_platforms: weakref.WeakSet[SimPlatform] = weakref.WeakSet()


class SimPlatform:
    """One domain's view of the sim hypervisor (the ``Platform`` protocol)."""

    def __init__(self, world: SimWorld, domid: int) -> None:
        self.world_path = world.path
        self._xenstore = world.xenstore_socket
        self.domid = domid
        self.closed = False
        self._df = world._open(domid)
        sock: socket.socket | None = None
        try:
            if self._df.destroyed:
                raise PlatformError(f"domain {domid} was destroyed")
            if not self._df.try_lock_alive():
                raise PlatformError(f"domain {domid} is already running in another process")
            struct.pack_into("<I", self._df.buf, PID_OFF, os.getpid())
            self._sock_path = socket_path(world.path, domid)
            try:  # a dead predecessor's socket: we hold the alive lock, so it is stale
                os.unlink(self._sock_path)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(self._sock_path)
            sock.setblocking(False)
        except BaseException:
            if sock is not None:
                sock.close()
            self._df.close()
            raise
        self._sock = sock
        self._domains = Domains(world.path, self._df)
        self._memory = SimMemory(self._df)
        # typed as the protocols: Platform's members are settable, hence invariant
        self.memory: Memory = self._memory
        self.grants: GrantTable = SimGrantTable(self._df)
        self.mapper: GrantMapper = SimGrantMapper(self._df, self._domains)
        self.evtchn: EventChannels = SimEventChannels(self._df, self._domains, sock)
        _live_platforms.add(self)

    def __repr__(self) -> str:
        return f"SimPlatform(domid={self.domid}, world={self.world_path!r})"

    def __enter__(self) -> SimPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def xenstore_path(self) -> str:
        """dom0 talks on the main socket; an introduced guest on its own, so xenstored knows who it is."""
        if self.domid == 0:
            return self._xenstore
        return f"{self._xenstore}.d{self.domid}"

    def accounting(self) -> Accounting:
        return self._df.accounting()

    def close(self) -> None:
        """Close the socket, drop the mappings, release the alive lock.  Pages, grants, maps and
        ports stay as the drivers left them: accounting shows any leak."""
        if self.closed:
            return
        self.closed = True
        _live_platforms.discard(self)
        try:
            os.unlink(self._sock_path)  # we still hold the alive lock: it is ours
        except FileNotFoundError:
            pass
        self._sock.close()
        self._memory.close()
        self._domains.close()
        self._df.close()  # closing the descriptor drops the alive lock

    def _abandon(self) -> None:
        # In a forked child: the parent still owns this domain.  Drop our copies of its
        # descriptors (its locks and socket stay the parent's) and refuse further use.
        self.closed = True
        self._sock.close()
        self._domains.abandon()
        self._df.abandon()


def _after_fork_in_child() -> None:
    for p in list(_live_platforms):
        p._abandon()
    _live_platforms.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
