"""Real Linux traffic over xennet: namespaces, TAPs, ping, iperf3 and a hashed file transfer.

Every address used lives inside namespaces these tests create, and everything is removed
afterwards, also on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netnsutil import netns_list
from xennet.world.link import Link, LinkConfig, preflight

pytestmark = pytest.mark.slow

_missing = preflight(check=True)
if _missing:
    pytest.skip("xennet link cannot run here: " + "; ".join(_missing), allow_module_level=True)


@pytest.fixture(params=[True, False], ids=["offloads", "no-offloads"])
def link(request: pytest.FixtureRequest) -> Iterator[Link]:
    lk = Link(LinkConfig(offloads=request.param))
    names = {lk.addr.guest_ns, lk.addr.host_ns}
    assert lk.ts is not None
    world_dir = lk.ts.path
    pids = [p.pid for p in (lk.guest, lk.backend)]
    try:
        yield lk
    finally:
        result = lk.close()
        # nothing of this link left behind: namespaces, shared memory, processes, held resources
        assert not names & netns_list()
        assert not os.path.exists(world_dir)
        for pid in pids:
            assert pid is None or not os.path.exists(f"/proc/{pid}") or _zombie(pid)
        for domid, acct in result.get("accounting_after", {}).items():
            assert not any(acct.values()), f"domain {domid} still holds {acct}"


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except OSError:
        return True


def run(lk: Link, ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = lk.exec(ns, *argv, timeout=timeout)
    assert r.returncode == 0, f"{argv}: {r.stdout[-500:]} {r.stderr[-500:]}"
    return r


def wait_listening(lk: Link, ns: str, port: int, server: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Until a socket listens on ``port`` in ``ns``: a server is ready when it listens, not after a nap."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert server.poll() is None, f"the server on port {port} exited with {server.returncode}"
        r = lk.exec(ns, "ss", "-Hltn", f"sport = :{port}", timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port} in {ns} after {timeout} s")


def iperf(lk: Link, *extra: str) -> dict:  # type: ignore[type-arg]
    a = lk.addr
    server = subprocess.Popen(
        ["ip", "netns", "exec", a.host_ns, "iperf3", "-s", "-1", "-B", a.host_ip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(lk, a.host_ns, 5201, server)
        r = run(lk, a.guest_ns, "iperf3", "-c", a.host_ip, "-J", *extra, timeout=90)
        return json.loads(r.stdout)  # type: ignore[no-any-return]
    finally:
        server.kill()
        server.wait(5)


def test_ping_both_ways(link: Link) -> None:
    a = link.addr
    run(link, a.guest_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", a.host_ip)
    run(link, a.host_ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", a.guest_ip)
    run(link, a.guest_ns, "ping", "-c", "2", "-s", "8000", "-W", "2", a.host_ip)  # fragmented by IP


@pytest.mark.parametrize("reverse", [False, True], ids=["guest-to-host", "host-to-guest"])
def test_iperf3_tcp(link: Link, reverse: bool) -> None:
    out = iperf(link, "-t", "5", *(["-R"] if reverse else []))
    received = out["end"]["sum_received"]
    assert received["bytes"] > 5_000_000, received  # real TCP moved through the rings
    assert received["bits_per_second"] > 1e6


def test_iperf3_udp(link: Link) -> None:
    out = iperf(link, "-u", "-b", "50M", "-t", "3", "-l", "1400")
    s = out["end"]["sum"]
    assert s["packets"] > 1000
    assert s["lost_percent"] < 50, s


def test_64_mib_file_transfer_checked_by_hash(link: Link, tmp_path: Path) -> None:
    a = link.addr
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(64 << 20))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    server_code = (
        "import socket,hashlib,sys\n"
        f"s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{a.host_ip}',5099));"
        "s.listen(1);c,_=s.accept();h=hashlib.sha256();n=0\n"
        "while True:\n d=c.recv(1<<20)\n if not d: break\n h.update(d);n+=len(d)\n"
        "print(n,h.hexdigest())\n"
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", a.host_ns, sys.executable, "-c", server_code],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(link, a.host_ns, 5099, server)
        client_code = (
            "import socket,sys\n"
            f"s=socket.create_connection(('{a.host_ip}',5099));f=open(sys.argv[1],'rb')\n"
            "while True:\n d=f.read(1<<20)\n if not d: break\n s.sendall(d)\n"
            "s.close()\n"
        )
        run(link, a.guest_ns, sys.executable, "-c", client_code, str(src), timeout=300)
        out, _ = server.communicate(timeout=120)
    finally:
        server.kill()
    n, digest = out.split()
    assert int(n) == 64 << 20 and digest == want


def test_pcap_holds_the_ring_view_and_the_segments(tmp_path: Path) -> None:
    from scapy.all import TCP, rdpcap  # type: ignore[import-untyped]

    ring, wire = tmp_path / "host.pcap", tmp_path / "host.pcap.segments.pcap"
    lk = Link(LinkConfig(pcap_host=str(ring)))
    try:
        out = iperf(lk, "-t", "2")
        assert out["end"]["sum_received"]["bytes"] > 0
    finally:
        lk.close()
    ring_frames, wire_frames = rdpcap(str(ring)), rdpcap(str(wire))
    assert len(wire_frames) > len(ring_frames) > 0  # GSO frames on the ring, segments on the wire
    assert max(len(f) for f in ring_frames) > 1514 >= max(len(f) for f in wire_frames)
    tcp_wire = [f for f in wire_frames if TCP in f]
    assert tcp_wire
    for f in tcp_wire[:200]:  # the segments' checksums are complete and correct
        declared = f[TCP].chksum
        del f[TCP].chksum
        assert f.__class__(bytes(f))[TCP].chksum == declared
    r = subprocess.run(["tcpdump", "-nn", "-r", str(wire)], capture_output=True, text=True)
    assert r.returncode == 0 and "IP " in r.stdout


def test_link_check_json_with_per_packet_grants_and_busy_poll() -> None:
    """The CLI end to end: Linux-style per-packet grants and busy-poll carry iperf3 and ping, and
    the JSON names every path with its spread, and nothing is held after teardown."""
    before = netns_list()
    r = subprocess.run(
        [sys.executable, "-m", "xennet", "link", "--check", "--json", "--runs", "1", "--seconds", "1",
         "grants=per-packet,poll_us=100"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["poll_us"] == 100 and out["runs"] == 1
    assert set(out["paths"]) == {"xennet guest->host", "xennet host->guest", "veth"}
    for name, p in out["paths"].items():
        assert not p["errors"], (name, p["errors"])
        assert p["gbit"]["min"] <= p["gbit"]["median"] <= p["gbit"]["max"] and p["gbit"]["min"] > 0
    assert out["paths"]["xennet guest->host"]["rtt_ms"]["median"] > 0
    for domid, acct in out["held_after_teardown"].items():
        assert not any(acct.values()), f"domain {domid} still holds {acct}"
    assert netns_list() <= before


def test_sigterm_tears_the_link_down() -> None:
    """`xennet link` ended by SIGTERM (a service manager, `timeout`) leaves nothing behind."""
    before = netns_list()
    proc = subprocess.Popen(["xennet", "link"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "tears everything down" in line:
                break
        else:
            raise AssertionError("xennet link never came up")
        assert netns_list() - before, "the link made no namespaces"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    assert "torn down" in out, out
    assert netns_list() == before, f"namespaces left: {netns_list() - before}"
