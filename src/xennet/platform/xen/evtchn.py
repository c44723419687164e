"""/dev/xen/evtchn, and the ``EventChannels`` of the xen platform on it.

The device (drivers/xen/evtchn.c, Linux 6.1): bind ioctls return the local port;
``read()`` returns the ports that fired as native ``u32`` values (EAGAIN when none, the
descriptor being O_NONBLOCK), and a port that fired stays masked (its late EOI withheld)
until it is written back with ``write()``, so it is reported once however often it is
notified meanwhile; writing it back delivers a notify that came while it was masked.
Writing a port that is not bound on this descriptor, or not masked, does nothing.  The
descriptor is readable while any port is pending.  The kernel's ring has a slot for every
bound port, so it cannot really overflow; if it did, ``read()`` fails with EFBIG (and
poll says POLLERR): the ring is then reset and every bound port is reported (a spurious
wake-up is harmless, a lost one is not).

Xen marks the *binding* end of a new interdomain channel pending at once (it makes up
for notifications the unbound end may have lost), so ``bind_interdomain``'s port fires
once right away: callers see one spurious event.

What the device cannot tell: ``IOCTL_EVTCHN_NOTIFY`` ignores the hypercall's result, so a
notify to a peer that closed its end or died succeeds silently; ``notify`` raises
PlatformError only when the port is not bound here (ENOTCONN from the kernel).  Watch the
peer's xenstore state (or ``@releaseDomain``) to learn that it went away.
"""

from __future__ import annotations

import errno as _errno
import os
import struct
from collections.abc import Callable, Iterable

from ..base import PlatformError
from . import uapi
from .device import DEV_DIR, XenDeviceError, ioctl, open_device

PORT_SIZE = uapi.EVTCHN_PORT_SIZE
_MAX_IO = 4096  # the kernel moves at most a page of ports per read()/write()
_NOTIFY = uapi.EVTCHN_NOTIFY.codec()
_UNBIND = uapi.EVTCHN_UNBIND.codec()
_UNBOUND = uapi.EVTCHN_BIND_UNBOUND_PORT.codec()
_INTERDOMAIN = uapi.EVTCHN_BIND_INTERDOMAIN.codec()
_VIRQ = uapi.EVTCHN_BIND_VIRQ.codec()
_RESTRICT = uapi.EVTCHN_RESTRICT_DOMID.codec()
_U32_MAX = 0xFFFFFFFF


def decode_ports(data: bytes) -> tuple[list[int], bytes]:
    """The ports in bytes read from the device, and any incomplete trailing bytes."""
    whole = len(data) - len(data) % PORT_SIZE
    return list(struct.unpack(f"={whole // PORT_SIZE}I", data[:whole])), data[whole:]


def encode_ports(ports: Iterable[int]) -> bytes:
    ports = list(ports)
    for p in ports:
        if not 0 <= p <= _U32_MAX:
            raise PlatformError(f"event channel port {p} out of range")
    return struct.pack(f"={len(ports)}I", *ports)


class Evtchn:
    """/dev/xen/evtchn: the raw ioctls, and read/write of port numbers (non-blocking)."""

    def __init__(self, dev_dir: str = DEV_DIR, *, fd: int | None = None) -> None:
        self.fd = open_device("evtchn", dev_dir, nonblocking=True) if fd is None else fd
        self._partial = b""

    def fileno(self) -> int:
        return self.fd

    def _ioctl(self, request: int, arg: bytearray | None, what: str) -> int:
        return ioctl(self.fd, request, arg, what)

    def bind_virq(self, virq: int) -> int:
        return self._ioctl(
            uapi.IOCTL_EVTCHN_BIND_VIRQ, bytearray(_VIRQ.pack(virq)), f"evtchn: bind VIRQ {virq}"
        )

    def bind_interdomain(self, remote_domain: int, remote_port: int) -> int:
        return self._ioctl(
            uapi.IOCTL_EVTCHN_BIND_INTERDOMAIN,
            bytearray(_INTERDOMAIN.pack(remote_domain, remote_port)),
            f"evtchn: bind to port {remote_port} of d{remote_domain}",
        )

    def bind_unbound_port(self, remote_domain: int) -> int:
        return self._ioctl(
            uapi.IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            bytearray(_UNBOUND.pack(remote_domain)),
            f"evtchn: allocate an unbound port for d{remote_domain}",
        )

    def unbind(self, port: int) -> None:
        self._ioctl(uapi.IOCTL_EVTCHN_UNBIND, bytearray(_UNBIND.pack(port)), f"evtchn: unbind port {port}")

    def notify(self, port: int) -> None:
        self._ioctl(uapi.IOCTL_EVTCHN_NOTIFY, bytearray(_NOTIFY.pack(port)), f"evtchn: notify port {port}")

    def reset(self) -> None:
        self._ioctl(uapi.IOCTL_EVTCHN_RESET, None, "evtchn: reset")

    def restrict_domid(self, domid: int) -> None:
        self._ioctl(
            uapi.IOCTL_EVTCHN_RESTRICT_DOMID,
            bytearray(_RESTRICT.pack(domid)),
            f"evtchn: restrict to d{domid}",
        )

    def read_ports(self) -> list[int]:
        """Every port reported pending now (never blocks); XenDeviceError(EFBIG) on overflow."""
        out: list[int] = []
        while True:
            try:
                data = os.read(self.fd, _MAX_IO)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                raise XenDeviceError(f"evtchn: read: {e.strerror}", errno=e.errno) from None
            if not data:
                break
            ports, self._partial = decode_ports(self._partial + data)
            out.extend(ports)
            if len(data) < _MAX_IO:
                break
        return out

    def write_ports(self, ports: Iterable[int]) -> None:
        """Unmask ``ports`` (each must be bound on this descriptor; the kernel ignores others)."""
        data = encode_ports(ports)
        while data:
            try:
                n = os.write(self.fd, data[:_MAX_IO])
            except InterruptedError:
                continue
            except OSError as e:
                raise XenDeviceError(f"evtchn: write: {e.strerror}", errno=e.errno) from None
            n -= n % PORT_SIZE
            if n <= 0:
                raise XenDeviceError("evtchn: write took no port")
            data = data[n:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class XenEventChannels:
    """``EventChannels`` over one evtchn descriptor; knows the ports bound through it."""

    def __init__(self, dev: Evtchn) -> None:
        self.dev = dev
        self._bound: set[int] = set()
        self.overflows = 0

    def _check_domid(self, domid: int) -> None:
        if not 0 <= domid <= 0xFFFF:
            raise PlatformError(f"event channel: bad domid {domid}")

    def alloc_unbound(self, remote_domid: int) -> int:
        self._check_domid(remote_domid)
        return self._bind(lambda: self.dev.bind_unbound_port(remote_domid))

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        self._check_domid(remote_domid)
        if not 0 < remote_port <= _U32_MAX:
            raise PlatformError(f"bind_interdomain: bad remote port {remote_port}")
        return self._bind(lambda: self.dev.bind_interdomain(remote_domid, remote_port))

    def _bind(self, call: Callable[[], int]) -> int:
        port = call()
        if port <= 0:
            raise PlatformError(f"event channel: the kernel returned port {port}")
        self._bound.add(port)
        return port

    def _check_port(self, what: str, port: int) -> None:
        if port not in self._bound:
            raise PlatformError(f"{what}: port {port} is not bound here")

    def notify(self, port: int) -> None:
        self._check_port("notify", port)
        try:
            self.dev.notify(port)
        except XenDeviceError as e:
            if e.errno == _errno.ENOTCONN:
                raise PlatformError(f"notify: port {port} is not bound (the kernel says)") from None
            raise

    def pending(self) -> list[int]:
        try:
            ports = self.dev.read_ports()
        except XenDeviceError as e:
            if e.errno != _errno.EFBIG:
                raise
            self.dev.reset()
            self.overflows += 1
            ports = sorted(self._bound)
        seen: set[int] = set()
        out: list[int] = []
        for p in ports:
            if p in self._bound and p not in seen:  # a port closed since it fired is dropped
                seen.add(p)
                out.append(p)
        return out

    def unmask(self, port: int) -> None:
        self._check_port("unmask", port)
        self.dev.write_ports([port])

    def close(self, port: int) -> None:
        self._check_port("close", port)
        self._bound.discard(port)
        self.dev.unbind(port)

    def fileno(self) -> int:
        return self.dev.fileno()

    @property
    def nr_ports(self) -> int:
        return len(self._bound)

    def close_all(self) -> None:
        for port in sorted(self._bound):
            try:
                self.close(port)
            except PlatformError:
                pass
