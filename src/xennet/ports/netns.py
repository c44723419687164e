"""Network namespaces, links, addresses and veth pairs: small helpers on pyroute2.

Everything goes through netlink (pyroute2), not ``ip`` subprocesses.  pyroute2 is imported
only when a helper that needs it runs, so ``xennet.ports.tap`` (which uses just
``run_in_netns``) works without it.

Entering a namespace: ``setns(CLONE_NEWNET)`` changes the network namespace of the calling
*thread* only.  ``run_in_netns`` runs a function in a short-lived thread that enters the
namespace first; whatever that function creates there -- a socket, an open ``/dev/net/tun``
(a TAP belongs to the namespace its file was opened in) -- stays in that namespace after the
thread is gone, while the rest of the process never leaves its own namespace.

Names: use ``unique_name`` (a per-call random suffix) so that parallel or crashed test runs
never collide; ``temporary_netns`` deletes the namespace (and with it every link inside)
however its block ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

NETNS_RUN_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
IFNAMSIZ = 16  # interface names are at most 15 bytes
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80

T = TypeVar("T")
NsRef = str | os.PathLike[str] | int  # a name under /var/run/netns, a path, or an open fd


class NetnsError(OSError):
    """A namespace or link operation failed; the message says which and on what."""


def unique_name(prefix: str, *, maxlen: int = IFNAMSIZ - 1) -> str:
    """``prefix`` plus a random hex suffix, at most ``maxlen`` characters (interface names
    are limited to 15)."""
    suffix = secrets.token_hex(4)
    room = maxlen - len(prefix)
    if room < 4:
        raise ValueError(f"prefix {prefix!r} leaves fewer than 4 characters for a unique suffix")
    return prefix + suffix[:room]


def netns_path(ns: str | os.PathLike[str]) -> Path:
    """The bind-mounted file of a named namespace (a path is returned as given)."""
    s = os.fspath(ns)
    return Path(s) if "/" in s else NETNS_RUN_DIR / s


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise NetnsError(e, f"setns(CLONE_NEWNET): {os.strerror(e)}")


def run_in_netns(ns: NsRef, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` inside network namespace ``ns`` (in a short-lived thread,
    so the caller's own namespace never changes) and return its result or raise its error."""
    if isinstance(ns, int):
        nsfd, own = ns, False
    else:
        path = netns_path(ns)
        try:
            nsfd, own = os.open(path, os.O_RDONLY | os.O_CLOEXEC), True
        except OSError as e:
            raise NetnsError(e.errno, f"network namespace {os.fspath(ns)!r}: {e.strerror}") from None
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            _setns(nsfd)
            result.append(fn(*args, **kwargs))
        except BaseException as e:  # handed to the caller's thread
            error.append(e)

    try:
        t = threading.Thread(target=body, name="xennet-netns", daemon=True)
        t.start()
        t.join()
    finally:
        if own:
            os.close(nsfd)
    if error:
        raise error[0]
    return result[0]


def socket_in_netns(ns: NsRef, family: int, type: int, proto: int = 0) -> socket.socket:
    """A socket of namespace ``ns`` (a socket belongs to the namespace it was created in)."""
    return run_in_netns(ns, socket.socket, family, type, proto)


def _pyroute2() -> Any:
    try:
        import pyroute2  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise NetnsError(errno.ENOSYS, f"pyroute2 is needed for namespaces and links ({e})") from None
    return pyroute2


def create_netns(name: str) -> None:
    """Create the named namespace (``ip netns add``); EEXIST if it is there already."""
    if (NETNS_RUN_DIR / name).exists():
        raise NetnsError(errno.EEXIST, f"network namespace {name!r} exists")
    _pyroute2().netns.create(name)


def delete_netns(name: str) -> bool:
    """Delete the named namespace (``ip netns del``); False if it did not exist.  Links in it
    go with it once nothing else holds it (an open TAP file keeps its namespace alive)."""
    if not (NETNS_RUN_DIR / name).exists():
        return False
    _pyroute2().netns.remove(name)
    return True


def list_netns() -> list[str]:
    return sorted(_pyroute2().netns.listnetns())


class Netns:
    """A named network namespace with link helpers, each a netlink request inside it.

    One pyroute2 ``IPRoute`` bound to the namespace is opened on first use and closed by
    ``close``/``delete``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ipr: Any = None

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @classmethod
    def current(cls) -> Netns:
        """This process's own namespace (links only; it is never deleted)."""
        return cls("")

    @property
    def path(self) -> Path:
        return netns_path(self.name) if self.name else Path("/proc/self/ns/net")

    @classmethod
    def create(cls, name: str | None = None, *, prefix: str = "xn") -> Netns:
        ns = cls(name or unique_name(prefix, maxlen=32))
        create_netns(ns.name)
        return ns

    def ipr(self) -> Any:
        """pyroute2 ``IPRoute`` whose netlink socket lives in this namespace."""
        if self._ipr is None:
            # flags=0: never create the namespace on the fly (pyroute2's default O_CREAT would)
            pr = _pyroute2()
            self._ipr = pr.IPRoute(netns=self.name, flags=0) if self.name else pr.IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    def delete(self) -> bool:
        self.close()
        if not self.name:
            raise NetnsError(errno.EPERM, "refusing to delete this process's own namespace")
        return delete_netns(self.name)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    # -- running things inside ---------------------------------------------------------------

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return run_in_netns(self.name, fn, *args, **kwargs)

    def socket(self, family: int, type: int, proto: int = 0) -> socket.socket:
        return socket_in_netns(self.name, family, type, proto)

    # -- links -------------------------------------------------------------------------------

    def links(self) -> list[str]:
        return sorted(str(m.get_attr("IFLA_IFNAME")) for m in self.ipr().get_links())

    def link_index(self, ifname: str) -> int:
        found = self.ipr().link_lookup(ifname=ifname)
        if not found:
            raise NetnsError(errno.ENODEV, f"no link {ifname!r} in namespace {self.name!r}")
        return int(found[0])

    def _link_attr(self, ifname: str, attr: str) -> Any:
        (msg,) = self.ipr().get_links(self.link_index(ifname))
        return msg.get_attr(attr)

    def link_mac(self, ifname: str) -> str:
        return str(self._link_attr(ifname, "IFLA_ADDRESS"))

    def link_mtu(self, ifname: str) -> int:
        return int(self._link_attr(ifname, "IFLA_MTU"))

    def link_up(self, ifname: str) -> None:
        self.ipr().link("set", index=self.link_index(ifname), state="up")

    def link_down(self, ifname: str) -> None:
        self.ipr().link("set", index=self.link_index(ifname), state="down")

    def set_mtu(self, ifname: str, mtu: int) -> None:
        self.ipr().link("set", index=self.link_index(ifname), mtu=mtu)

    def set_mac(self, ifname: str, mac: str) -> None:
        self.ipr().link("set", index=self.link_index(ifname), address=mac)

    def set_master(self, ifname: str, bridge: str) -> None:
        """Enslave ``ifname`` to the bridge ``bridge`` (which must exist here)."""
        self.ipr().link("set", index=self.link_index(ifname), master=self.link_index(bridge))

    def set_gso_max_size(self, ifname: str, size: int) -> None:
        """Cap the GSO packets the stack builds for this link (e.g. below 65535 bytes of
        frame, the most one netif packet holds); IFLA_GSO_MAX_SIZE needs Linux >= 5.19."""
        self.ipr().link("set", index=self.link_index(ifname), gso_max_size=size)

    def delete_link(self, ifname: str) -> None:
        self.ipr().link("del", index=self.link_index(ifname))

    def move_link(self, ifname: str, to: Netns) -> None:
        """Move link ``ifname`` of this namespace into ``to`` (its open fds keep working)."""
        fd = os.open(to.path, os.O_RDONLY)
        try:
            self.ipr().link("set", index=self.link_index(ifname), net_ns_fd=fd)
        finally:
            os.close(fd)

    def add_address(self, ifname: str, address: str, prefixlen: int, *, nodad: bool = True) -> None:
        """Add an IPv4/IPv6 address.  ``nodad`` (IPv6): usable at once, no duplicate detection."""
        kw: dict[str, Any] = {"flags": IFA_F_NODAD} if nodad and ":" in address else {}
        self.ipr().addr("add", index=self.link_index(ifname), address=address, prefixlen=prefixlen, **kw)

    def add_neighbor(self, ifname: str, address: str, mac: str) -> None:
        """A permanent neighbour entry (no ARP / neighbour discovery for ``address``)."""
        self.ipr().neigh("add", dst=address, lladdr=mac, ifindex=self.link_index(ifname), state=NUD_PERMANENT)

    def create_veth(self, ifname: str, peer: str, peer_ns: Netns | None = None) -> None:
        """A veth pair: ``ifname`` here, ``peer`` in ``peer_ns`` (default: here too)."""
        spec: dict[str, Any] = {"ifname": peer}
        if peer_ns is not None:
            spec["net_ns_fd"] = peer_ns.name
        self.ipr().link("add", ifname=ifname, kind="veth", peer=spec)


def create_veth(ifname: str, peer: str, peer_ns: Netns) -> None:
    """A veth pair with ``ifname`` in *this process's* namespace and ``peer`` inside
    ``peer_ns`` (for comparing xennet's path against the kernel's own).  Delete it with
    ``delete_link`` (deleting either end removes both)."""
    pr = _pyroute2()
    with pr.IPRoute() as ipr:
        ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns.name})


def delete_link(ifname: str) -> bool:
    """Delete a link of this process's namespace; False if there is none of that name."""
    pr = _pyroute2()
    with pr.IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        ipr.link("del", index=found[0])
        return True


@contextlib.contextmanager
def temporary_netns(prefix: str = "xn") -> Iterator[Netns]:
    """A fresh uniquely named namespace, deleted (with its links) however the block ends."""
    ns = Netns.create(prefix=prefix)
    try:
        yield ns
    finally:
        ns.delete()
