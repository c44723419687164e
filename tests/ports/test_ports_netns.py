"""Namespace and link helpers (pyroute2), used only on namespaces the tests create."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from tapnet import netns_skip_reason

from xennet.ports.netns import (
    Netns,
    NetnsError,
    create_veth,
    delete_link,
    list_netns,
    run_in_netns,
    temporary_netns,
    unique_name,
)


def _my_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def test_unique_names_fit_an_interface_name() -> None:
    names = {unique_name("xtap") for _ in range(200)}
    assert len(names) == 200 and all(len(n) <= 15 and n.startswith("xtap") for n in names)
    with pytest.raises(ValueError):
        unique_name("a-very-long-prefix")


@pytest.fixture
def second_netns(netns: Netns) -> Iterator[Netns]:
    other = Netns.create(prefix="xnt")
    try:
        yield other
    finally:
        other.delete()


def test_create_and_delete(netns: Netns) -> None:
    assert netns.name in list_netns() and netns.path.exists()
    assert netns.links() == ["lo"]
    with pytest.raises(NetnsError):
        Netns.create(netns.name)  # exists already


def test_temporary_netns_is_removed_when_the_block_fails() -> None:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="boom"):
        with temporary_netns("xnt") as ns:
            assert ns.path.exists()
            raise RuntimeError("boom")
    assert not ns.path.exists() and ns.name not in list_netns()
    assert not ns.delete()  # gone already: nothing to do


def test_run_in_netns_leaves_the_caller_where_it_was(netns: Netns) -> None:
    before = _my_netns()
    inside = netns.run(_my_netns)
    assert inside != before and _my_netns() == before
    with pytest.raises(ZeroDivisionError):
        run_in_netns(netns.name, lambda: 1 // 0)
    with pytest.raises(NetnsError, match="no-such"):
        run_in_netns("xennet-no-such-ns", _my_netns)
    assert _my_netns() == before


def test_veth_between_namespaces_carries_udp(netns: Netns, second_netns: Netns) -> None:
    a, b = netns, second_netns
    a.create_veth("xva", "xvb", b)
    assert "xva" in a.links() and "xvb" in b.links() and "xvb" not in a.links()
    for ns, dev, ip in ((a, "xva", "10.213.1.1"), (b, "xvb", "10.213.1.2")):
        ns.set_mtu(dev, 1400)
        ns.add_address(dev, ip, 24)
        ns.link_up(dev)
        assert ns.link_mtu(dev) == 1400
    rx = b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("10.213.1.2", 9000))
        rx.settimeout(5)
        tx.sendto(b"across the veth", ("10.213.1.2", 9000))
        data, src = rx.recvfrom(100)
        assert data == b"across the veth" and src[0] == "10.213.1.1"
    finally:
        rx.close()
        tx.close()
    a.delete_link("xva")  # deleting one end removes both
    assert "xvb" not in b.links()


def test_neighbor_and_gso_max_size(netns: Netns) -> None:
    netns.create_veth("xva", "xvb")
    netns.add_address("xva", "fd00:213::1", 64)
    netns.add_neighbor("xva", "fd00:213::9", "02:13:00:00:00:09")
    netns.set_gso_max_size("xva", 32768)
    msg = netns.ipr().get_links(netns.link_index("xva"))[0]
    assert msg.get_attr("IFLA_GSO_MAX_SIZE") == 32768
    neigh = [n.get_attr("NDA_LLADDR") for n in netns.ipr().get_neighbours(dst="fd00:213::9")]
    assert neigh == ["02:13:00:00:00:09"]
    netns.link_down("xva")


def test_module_level_veth_helpers_run_where_they_are_called(netns: Netns, second_netns: Netns) -> None:
    """``create_veth``/``delete_link`` act on the calling thread's namespace: run inside a
    test namespace here, so the host's own namespace is never touched."""
    run_in_netns(netns.name, create_veth, "xva", "xvb", second_netns)
    assert "xva" in netns.links() and "xvb" in second_netns.links()
    assert run_in_netns(netns.name, delete_link, "xva")
    assert not run_in_netns(netns.name, delete_link, "xva")
    assert "xvb" not in second_netns.links()
