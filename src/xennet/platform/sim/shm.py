"""A domain file opened by one process: the whole-file mmap, its tables and its locks.

Locks are Linux open-file-description locks (``F_OFD_SETLK``): byte-range like
``lockf`` but owned by the open file, so two platform objects in one process exclude
each other, closing some other descriptor of the file drops nothing, and a killed
process's locks vanish with its descriptors.  A per-object ``threading.Lock`` covers
threads sharing one descriptor.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading

from ...abi.grant_table import GRANT_ENTRY_V1, GTF_permit_access, GTF_type_mask
from ..base import PAGE_SIZE, Accounting, PlatformError
from .layout import (
    ECS_FREE,
    EVTCHN,
    FT_FREE,
    HEADER,
    HEADER_CODEC,
    LOCK_ALIVE,
    LOCK_EVTCHN,
    LOCK_GRANT,
    MAGIC,
    MAPTRACK,
    MT_INUSE,
    STATE_DESTROYED,
    STATE_OFF,
    STATE_READY,
    VERSION,
    Layout,
)

_FLOCK = struct.Struct("hhqqi4x")  # struct flock (x86_64 / aarch64 Linux)
_U32 = struct.Struct("<I")


def _flock(kind: int, start: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, start, 1, 0)


_WR = {b: _flock(fcntl.F_WRLCK, b) for b in (LOCK_ALIVE, LOCK_GRANT, LOCK_EVTCHN)}
_UN = {b: _flock(fcntl.F_UNLCK, b) for b in (LOCK_ALIVE, LOCK_GRANT, LOCK_EVTCHN)}

# byte -> 1 when it is the low byte of a grant entry permitting access
_PERMITS = bytes(1 if (b & GTF_type_mask) == GTF_permit_access else 0 for b in range(256))
_INUSE = bytes(1 if b & MT_INUSE else 0 for b in range(256))


def write_new_domain_file(path: str, domid: int, layout: Layout) -> None:
    """Create the file complete under a temporary name, then rename: openers never see half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, layout.file_size)  # sparse on tmpfs: memory is only used when touched
        hdr = HEADER_CODEC.pack(
            MAGIC,
            VERSION,
            domid,
            layout.nr_frames,
            layout.nr_grant_entries,
            layout.nr_maptrack,
            layout.nr_ports,
            STATE_READY,
            0,
        )
        os.pwrite(fd, hdr, 0)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)


class DomainFile:
    """One open of ``d<domid>.mem``.  Views: ``buf`` (whole file) and ``mem`` (the frames)."""

    def __init__(self, path: str, domid: int) -> None:
        self.path = path
        self.domid = domid
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            raw = os.pread(self.fd, HEADER.size, 0)
            if len(raw) != HEADER.size:
                raise PlatformError(f"{path}: truncated domain file")
            magic, version, hdomid, nr_frames, nr_grant, nr_mt, nr_ports, _state, _pid = HEADER_CODEC.unpack(
                raw
            )
            if magic != MAGIC or version != VERSION or hdomid != domid:
                raise PlatformError(f"{path}: not a sim domain file for domain {domid}")
            self.layout = Layout.compute(nr_frames, nr_grant, nr_mt, nr_ports)
            # Map through a second open: mmap keeps a dup of its descriptor for as long as a
            # view lives, and a dup of ``self.fd`` would keep our locks (the alive lock!) held.
            mfd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                self._mm = mmap.mmap(mfd, self.layout.file_size)
            finally:
                os.close(mfd)
        except BaseException:
            os.close(self.fd)
            raise
        self.buf = memoryview(self._mm)
        lay = self.layout
        self.mem = self.buf[lay.mem_off : lay.file_size]
        self.pending = self.buf[lay.pending_off : lay.pending_off + lay.nr_ports]
        self.masked = self.buf[lay.masked_off : lay.masked_off + lay.nr_ports]
        self.grant_table = self.buf[
            lay.grant_off : lay.grant_off + GRANT_ENTRY_V1.size * lay.nr_grant_entries
        ]
        self.grant_off = lay.grant_off
        self.active_off = lay.active_off
        self.evtchn_off = lay.evtchn_off
        self.nr_frames = lay.nr_frames
        self.nr_grant_entries = lay.nr_grant_entries
        self.nr_ports = lay.nr_ports
        self._tlocks = {LOCK_GRANT: threading.Lock(), LOCK_EVTCHN: threading.Lock()}
        self.closed = False

    # -- state ------------------------------------------------------------------------

    @property
    def destroyed(self) -> bool:
        return bool(_U32.unpack_from(self.buf, STATE_OFF)[0] != STATE_READY)

    def mark_destroyed(self) -> None:
        _U32.pack_into(self.buf, STATE_OFF, STATE_DESTROYED)

    # -- locks ------------------------------------------------------------------------

    def lock(self, which: int) -> None:
        self._tlocks[which].acquire()
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLKW, _WR[which])
        except BaseException:
            self._tlocks[which].release()
            raise

    def unlock(self, which: int) -> None:
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _UN[which])
        finally:
            self._tlocks[which].release()

    def try_lock_alive(self) -> bool:
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _WR[LOCK_ALIVE])
        except (BlockingIOError, PermissionError):
            return False
        return True

    def alive_elsewhere(self) -> bool:
        """True while another open file (the domain's process) holds the alive lock."""
        got = fcntl.fcntl(self.fd, fcntl.F_OFD_GETLK, _WR[LOCK_ALIVE])
        return int(_FLOCK.unpack(got)[0]) != fcntl.F_UNLCK

    # -- accounting -------------------------------------------------------------------

    def accounting(self) -> Accounting:
        lay = self.layout
        buf = self.buf
        frames = buf[lay.frames_off : lay.frames_off + lay.nr_frames]
        pages = lay.nr_frames - bytes(frames).count(FT_FREE)
        gt = buf[lay.grant_off : lay.grant_off + GRANT_ENTRY_V1.size * lay.nr_grant_entries]
        grants = bytes(gt[0 :: GRANT_ENTRY_V1.size]).translate(_PERMITS).count(1)  # low byte of flags
        mt = buf[lay.maptrack_off : lay.maptrack_off + MAPTRACK.size * lay.nr_maptrack]
        maps = bytes(mt[2 :: MAPTRACK.size]).translate(_INUSE).count(1)  # low byte of flags
        ev = buf[lay.evtchn_off : lay.evtchn_off + EVTCHN.size * lay.nr_ports]
        ports = lay.nr_ports - bytes(ev[0 :: EVTCHN.size]).count(ECS_FREE)
        for v in (frames, gt, mt, ev):
            v.release()
        return Accounting(pages=pages, grants=grants, maps=maps, ports=ports)

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Drop the mapping if nobody outside still holds a view of it (else the GC does)."""
        if self.closed:
            return
        self.closed = True
        for v in (self.mem, self.pending, self.masked, self.grant_table, self.buf):
            v.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # a Page/Mapping view is still alive; the mmap goes when it does
        os.close(self.fd)

    def abandon(self) -> None:
        """In a forked child: forget the inherited descriptor without touching shared locks."""
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def page_slice(frame: int, nr: int = 1) -> slice:
    return slice(frame * PAGE_SIZE, (frame + nr) * PAGE_SIZE)
