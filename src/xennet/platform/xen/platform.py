"""``XenPlatform``: one domain's view of a real Xen hypervisor, through the Linux devices.

    XenPlatform(peer_domid=0)     # a frontend in a domU: its memory is granted to dom0
    XenPlatform()                 # a backend in dom0: maps and grant-copies, grants nothing

Devices: /dev/xen/gntdev and /dev/xen/evtchn always; /dev/xen/gntalloc when there is a
grant peer; /dev/xen/xenbus when the domid must be looked up.  A missing device is a
PlatformError naming it and what provides it.  The memory/grant model and its limits are
described in ``gntalloc``.
"""

from __future__ import annotations

import os

from ...abi.grant_table import DOMID_SELF
from ..base import Accounting, EventChannels, GrantMapper, GrantTable, Memory, PlatformError
from .device import DEV_DIR, SYS_HYPERVISOR_TYPE, missing_device_message
from .evtchn import Evtchn, XenEventChannels
from .gntalloc import (
    WANTED_GNTALLOC_LIMIT,
    Gntalloc,
    ReadonlyPolicy,
    XenGrantTable,
    XenMemory,
    ensure_gntalloc_limit,
    read_limit,
)
from .gntdev import Gntdev, XenGrantMapper
from .xenbus import XenbusTransport, read_domid

DOMID_FIRST_RESERVED = DOMID_SELF
SYS_HYPERVISOR_UUID = "/sys/hypervisor/uuid"
XENSTORED_SOCKET = "/var/run/xenstored/socket"
_DOM0_UUID = "00000000-0000-0000-0000-000000000000"


def required_devices(peer_domid: int | None, domid: int | None) -> list[str]:
    names = ["gntdev", "evtchn"]
    if peer_domid is not None:
        names.append("gntalloc")
    if domid is None:
        names.append("xenbus")
    return names


def check_devices(names: list[str], dev_dir: str = DEV_DIR, hv_type_path: str = SYS_HYPERVISOR_TYPE) -> None:
    """Raise PlatformError (one line) for the first missing device, naming the others."""
    missing = [n for n in names if not os.path.exists(os.path.join(dev_dir, n))]
    if missing:
        msg = missing_device_message(os.path.join(dev_dir, missing[0]), missing[0], hv_type_path)
        if len(missing) > 1:
            msg += f" (also missing: {', '.join(missing[1:])})"
        raise PlatformError(msg)


def _check_domid(what: str, domid: int) -> None:
    if not 0 <= domid < DOMID_FIRST_RESERVED:
        raise PlatformError(f"XenPlatform: {what} {domid} is not a domain id (0..{DOMID_FIRST_RESERVED - 1})")


def detect_domid(dev_dir: str = DEV_DIR, uuid_path: str = SYS_HYPERVISOR_UUID, timeout: float = 5.0) -> int:
    """This domain's id: xenstore's ``domid`` key (via /dev/xen/xenbus); failing that, 0 if
    /sys/hypervisor/uuid is dom0's all-zero UUID.  Linux exports no domid file."""
    why = ""
    try:
        transport = XenbusTransport(dev_dir)
        try:
            return read_domid(transport, timeout)
        finally:
            transport.close()
    except (PlatformError, OSError) as e:
        why = str(e)
    try:
        with open(uuid_path) as f:
            if f.read().strip() == _DOM0_UUID:
                return 0
    except OSError:
        pass
    raise PlatformError(f"cannot tell this domain's id ({why}): pass XenPlatform(domid=...)")


class XenPlatform:
    """One domain's hypervisor services on real Xen (the ``Platform`` seam)."""

    def __init__(
        self,
        domid: int | None = None,
        peer_domid: int | None = None,
        *,
        dev_dir: str = DEV_DIR,
        readonly: ReadonlyPolicy = "relax",
        hv_type_path: str = SYS_HYPERVISOR_TYPE,
        gntalloc_limit: int | None = WANTED_GNTALLOC_LIMIT,
        arena_frames: int | None = None,
    ) -> None:
        """``gntalloc_limit``: with a grant peer, raise gntalloc's global page limit to at
        least this (it is 1024 by default, too few for a busy netfront; see ``gntalloc``);
        None leaves it alone.  ``self.gntalloc_limit`` is the limit then in force."""
        if peer_domid is not None:
            _check_domid("peer_domid", peer_domid)
        if domid is not None:
            _check_domid("domid", domid)
        check_devices(required_devices(peer_domid, domid), dev_dir, hv_type_path)
        gntdev: Gntdev | None = None
        evtchn: Evtchn | None = None
        gntalloc: Gntalloc | None = None
        try:
            if domid is None:
                domid = detect_domid(dev_dir)
            gntdev = Gntdev(dev_dir)
            evtchn = Evtchn(dev_dir)
            if peer_domid is not None:
                gntalloc = Gntalloc(dev_dir)
                if gntalloc_limit is not None:
                    ensure_gntalloc_limit(gntalloc_limit)
        except BaseException:
            for dev in (gntdev, evtchn, gntalloc):
                if dev is not None:
                    dev.close()
            raise
        self._wire(domid, peer_domid, gntdev, evtchn, gntalloc, readonly, dev_dir, arena_frames)

    @classmethod
    def from_devices(
        cls,
        domid: int,
        gntdev: Gntdev,
        evtchn: Evtchn,
        gntalloc: Gntalloc | None = None,
        peer_domid: int | None = None,
        *,
        readonly: ReadonlyPolicy = "relax",
        dev_dir: str = DEV_DIR,
        arena_frames: int | None = None,
    ) -> XenPlatform:
        """A platform over devices opened elsewhere (it closes them on ``close``)."""
        _check_domid("domid", domid)
        if peer_domid is not None:
            _check_domid("peer_domid", peer_domid)
        self = cls.__new__(cls)
        self._wire(domid, peer_domid, gntdev, evtchn, gntalloc, readonly, dev_dir, arena_frames)
        return self

    def _wire(
        self,
        domid: int,
        peer_domid: int | None,
        gntdev: Gntdev,
        evtchn: Evtchn,
        gntalloc: Gntalloc | None,
        readonly: ReadonlyPolicy,
        dev_dir: str,
        arena_frames: int | None = None,
    ) -> None:
        self.domid = domid
        self.peer_domid = peer_domid
        self.dev_dir = dev_dir
        self.closed = False
        self.gntalloc_limit = read_limit() if gntalloc is not None else None
        self._gntdev = gntdev
        self._evtchn_dev = evtchn
        self._gntalloc = gntalloc
        self.xen_memory = XenMemory(
            gntalloc if peer_domid is not None else None, peer_domid, arena_frames=arena_frames
        )
        self.grant_table = XenGrantTable(self.xen_memory, readonly)
        self.grant_mapper = XenGrantMapper(gntdev, domid, self.xen_memory.frame_address)
        self.event_channels = XenEventChannels(evtchn)
        # typed as the protocols: Platform's members are settable, hence invariant
        self.memory: Memory = self.xen_memory
        self.grants: GrantTable = self.grant_table
        self.mapper: GrantMapper = self.grant_mapper
        self.evtchn: EventChannels = self.event_channels

    def __repr__(self) -> str:
        return f"XenPlatform(domid={self.domid}, peer_domid={self.peer_domid}, dev_dir={self.dev_dir!r})"

    def __enter__(self) -> XenPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def xenstore_path(self) -> str:
        """xenstored's socket when there is one here (dom0), else the xenbus device: a
        ``SocketTransport`` takes the former only; ``xenstore_transport()`` works everywhere."""
        sock = os.environ.get("XENSTORED_PATH") or XENSTORED_SOCKET
        if os.path.exists(sock):
            return sock
        return os.path.join(self.dev_dir, "xenbus")

    def xenstore_transport(self) -> XenbusTransport:
        """A new xenstore connection through /dev/xen/xenbus, for ``XenstoreClient(transport=...)``."""
        return XenbusTransport(self.dev_dir)

    def accounting(self) -> Accounting:
        return Accounting(
            pages=self.xen_memory.nr_frames,
            grants=self.grant_table.nr_grants,
            maps=self.grant_mapper.nr_mapped,
            ports=self.event_channels.nr_ports,
        )

    def close(self) -> None:
        """Unmap, unbind and free everything still held, then close the devices (closing them
        would make the kernel release it all anyway)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.grant_mapper.close()
            self.event_channels.close_all()
            self.xen_memory.close()
        finally:
            self._close_devices()

    def _close_devices(self) -> None:
        for dev in (self._gntdev, self._evtchn_dev, self._gntalloc):
            if dev is not None:
                dev.close()
