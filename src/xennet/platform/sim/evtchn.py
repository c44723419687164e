"""Event channels: port tables in shared memory, wake-ups as datagrams.

Each domain's process binds ``d<domid>.evtchn`` (a unix datagram socket).  A notify sets
the remote port's pending byte and, unless that port is masked, sends a datagram to the
remote socket.  The datagram is only a doorbell: ``pending()`` drains the socket and then
scans the pending bytes, so a datagram lost to a full socket queue loses no event (a full
queue means the owner will wake and scan anyway).

Delivery masks the port (as /dev/xen/evtchn does) until ``unmask``.  Both sides use the
store-fence-load pattern of Xen's 2-level events: the notifier writes pending then reads
masked, the owner writes masked then reads pending, so at least one of them kicks.
"""

from __future__ import annotations

import socket
import struct

from ...ring.barrier import full_barrier
from ..base import PeerGone, PlatformError
from .grants import Domains
from .layout import ECS_FREE, ECS_INTERDOMAIN, ECS_UNBOUND, EVTCHN, EVTCHN_CODEC, LOCK_EVTCHN
from .shm import DomainFile

_PORT = struct.Struct("<I")


def port_entry(df: DomainFile, port: int) -> tuple[int, int, int]:
    """(state, remote domid, remote port) of ``port``; (ECS_FREE, 0, 0) when out of range."""
    if not 0 < port < df.nr_ports:
        return ECS_FREE, 0, 0
    state, rdomid, rport = EVTCHN_CODEC.unpack_from(df.buf, df.evtchn_off + port * EVTCHN.size)
    return state, rdomid, rport


def _set_entry(df: DomainFile, port: int, state: int, rdomid: int, rport: int) -> None:
    EVTCHN_CODEC.pack_into(df.buf, df.evtchn_off + port * EVTCHN.size, state, rdomid, rport)


def _lock_pair(a: DomainFile, b: DomainFile | None) -> list[DomainFile]:
    """Take LOCK_EVTCHN of one or two domains in domid order (Xen's double_evtchn_lock)."""
    files = [a] if b is None or b is a else sorted((a, b), key=lambda f: f.domid)
    taken: list[DomainFile] = []
    try:
        for f in files:
            f.lock(LOCK_EVTCHN)
            taken.append(f)
    except BaseException:
        _unlock(taken)
        raise
    return taken


def _unlock(files: list[DomainFile]) -> None:
    for f in reversed(files):
        f.unlock(LOCK_EVTCHN)


def unbind_peer(own: DomainFile, port: int, peer: DomainFile | None, peer_port: int) -> None:
    """Close our end: the peer's port, if still linked to ours, goes back to unbound
    (Xen's evtchn_close), so the peer's next notify fails.  Caller holds both locks."""
    if peer is not None:
        st, rdomid, rport = port_entry(peer, peer_port)
        if st == ECS_INTERDOMAIN and rdomid == own.domid and rport == port:
            _set_entry(peer, peer_port, ECS_UNBOUND, own.domid, 0)
    _set_entry(own, port, ECS_FREE, 0, 0)
    own.pending[port] = 0
    own.masked[port] = 0


def socket_path(world_path: str, domid: int) -> str:
    return f"{world_path}/d{domid}.evtchn"


class SimEventChannels:
    def __init__(self, own: DomainFile, domains: Domains, sock: socket.socket) -> None:
        self._own = own
        self._domains = domains
        self._sock = sock
        self._paths: dict[int, str] = {}
        self._own_path = self._path(own.domid)

    def _path(self, domid: int) -> str:
        p = self._paths.get(domid)
        if p is None:
            p = self._paths[domid] = socket_path(self._domains.world_path, domid)
        return p

    def _resolve(self, domid: int) -> DomainFile:
        df = self._domains.get(domid)
        if df is None:
            raise PlatformError(f"event channel: no domain {domid}")
        return df

    def _find_free(self) -> int:
        own = self._own
        states = bytes(own.buf[own.evtchn_off : own.evtchn_off + own.nr_ports * EVTCHN.size : EVTCHN.size])
        port = states.find(ECS_FREE, 1)  # port 0 is never used
        if port < 0:
            raise PlatformError(f"domain {own.domid}: no free event channel ports")
        return port

    def alloc_unbound(self, remote_domid: int) -> int:
        remote = self._resolve(remote_domid)
        own = self._own
        own.lock(LOCK_EVTCHN)
        try:
            port = self._find_free()
            own.pending[port] = 0
            own.masked[port] = 0
            _set_entry(own, port, ECS_UNBOUND, remote.domid, 0)
        finally:
            own.unlock(LOCK_EVTCHN)
        return port

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        own = self._own
        remote = self._resolve(remote_domid)
        taken = _lock_pair(own, remote)
        try:
            st, rdomid, _ = port_entry(remote, remote_port)
            if st != ECS_UNBOUND or rdomid != own.domid:
                raise PlatformError(
                    f"bind_interdomain: port {remote_port} of domain {remote.domid} is not unbound for us"
                )
            port = self._find_free()
            own.pending[port] = 0
            own.masked[port] = 0
            _set_entry(own, port, ECS_INTERDOMAIN, remote.domid, remote_port)
            _set_entry(remote, remote_port, ECS_INTERDOMAIN, own.domid, port)
        finally:
            _unlock(taken)
        # Xen marks the new local port pending: a notify the peer sent to its port while
        # it was still unbound would otherwise be lost.
        self._raise(own, port, self._own_path)
        return port

    def _raise(self, df: DomainFile, port: int, path: str) -> None:
        df.pending[port] = 1
        full_barrier()
        if df.masked[port]:
            return  # delivered when the owner unmasks
        try:
            self._sock.sendto(_PORT.pack(port), path)
        except BlockingIOError:
            pass  # their queue is full, so they will wake and scan the pending bytes anyway

    def notify(self, port: int) -> None:
        st, rdomid, rport = port_entry(self._own, port)
        if st == ECS_UNBOUND:
            raise PeerGone(f"notify: port {port} is not connected (the peer closed it)")
        if st != ECS_INTERDOMAIN:
            raise PlatformError(f"notify: port {port} is not bound")
        remote = self._domains.get(rdomid)
        if remote is None:
            raise PeerGone(f"notify: domain {rdomid} is gone")
        rst, rr_domid, rr_port = port_entry(remote, rport)
        if rst != ECS_INTERDOMAIN or rr_domid != self._own.domid or rr_port != port:
            raise PeerGone(f"notify: domain {rdomid} closed its end of port {port}")
        try:
            self._raise(remote, rport, self._path(rdomid))
        except (ConnectionRefusedError, FileNotFoundError) as e:
            # nobody has the socket bound: the domain's process is dead
            raise PeerGone(f"notify: domain {rdomid} is not running ({e.strerror})") from None

    def pending(self) -> list[int]:
        sock = self._sock
        while True:  # drain the doorbells first, so any raised after this are seen next time
            try:
                sock.recv(64)
            except BlockingIOError:
                break
        own = self._own
        snap = bytes(own.pending)
        out: list[int] = []
        i = snap.find(1, 1)
        while i >= 0:
            if not own.masked[i]:
                own.masked[i] = 1
                own.pending[i] = 0
                out.append(i)
            i = snap.find(1, i + 1)
        return out

    def unmask(self, port: int) -> None:
        own = self._own
        if port_entry(own, port)[0] == ECS_FREE:
            raise PlatformError(f"unmask: port {port} is not bound")
        own.masked[port] = 0
        full_barrier()
        if own.pending[port]:
            try:  # something arrived while masked: ring our own doorbell
                self._sock.sendto(_PORT.pack(port), self._own_path)
            except BlockingIOError:
                pass

    def close(self, port: int) -> None:
        own = self._own
        st, rdomid, rport = port_entry(own, port)
        if st == ECS_FREE:
            raise PlatformError(f"close: port {port} is not bound")
        peer = self._domains.get(rdomid) if st == ECS_INTERDOMAIN else None
        taken = _lock_pair(own, peer)
        try:
            st, rdomid, rport = port_entry(own, port)  # the peer may have closed meanwhile
            unbind_peer(own, port, peer if st == ECS_INTERDOMAIN else None, rport)
        finally:
            _unlock(taken)

    def fileno(self) -> int:
        return self._sock.fileno()


def close_all_ports(own: DomainFile, domains: Domains) -> None:
    """Toolstack, for a dead domain: close every port, unbinding the peers' ends."""
    for port in range(1, own.nr_ports):
        st, rdomid, rport = port_entry(own, port)
        if st == ECS_FREE:
            continue
        peer = domains.get(rdomid) if st == ECS_INTERDOMAIN else None
        taken = _lock_pair(own, peer)
        try:
            unbind_peer(own, port, peer, rport)
        finally:
            _unlock(taken)
