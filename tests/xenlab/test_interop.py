"""xennet's drivers against the Linux kernel's, on real Xen 4.17:

* our netback in dom0 (``xennet xen netback --kind pyvif``) serving a domU's kernel xen-netfront;
* our netfront in a domU (``xennet xen netfront``, no xen-netfront loaded) served by dom0's kernel
  xen-netback on the bridge xenbr0.

Each test pings, moves ``PAIRING_BYTES`` (4 MiB) each way through the hash-checked transfer tool,
then stops our driver with SIGTERM and checks its counters: GSO and multi-slot packets both ways,
no errors, and nothing (grants, maps, ports, pages) still held.  Each runs in a guest of 1 and of
2 vCPUs, beside the kernel<->kernel baseline of the same size (test_domu.py).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from xenlab import guest
from xenlab import transfer as xf
from xenlab.lab import Lab

pytestmark = [pytest.mark.xen, pytest.mark.slow]

SEED = 11
N = xf.PAIRING_BYTES  # each way, as the kernel<->kernel baseline moves (test_domu.py)
#: the guest's vCPUs: with one, our netfront (a process) takes its CPU time from the application
VCPUS = pytest.mark.parametrize("vcpus", [1, 2], ids=["1vcpu", "2vcpu"])
PYVIF_NET = "192.0.3"  # our netback's TAP in dom0 is .1, the domU .2


def start_bg(lab: Lab, name: str, cmd: str, ready: str, timeout: float = 60) -> None:
    """Start ``cmd`` in dom0 in the background (stdout /tmp/NAME.out, stderr /tmp/NAME.log);
    return once ``ready`` shows in its log."""
    log = f"/tmp/{name}.log"
    lab.check(
        f"setsid {cmd} </dev/null >/tmp/{name}.out 2>{log} & echo $! >/tmp/{name}.pid\n"
        f"for i in $(seq 1 {int(timeout * 5)}); do grep -q {ready!r} {log} /tmp/{name}.out && exit 0;"
        f" kill -0 $(cat /tmp/{name}.pid) || break; sleep 0.2; done; cat {log}; exit 1",
        timeout=timeout + 15,
    )


def stop_bg(lab: Lab, name: str, timeout: float = 30) -> tuple[str, str]:
    """SIGTERM it, wait for it to exit; returns (stdout, stderr)."""
    lab.run(
        f"p=$(cat /tmp/{name}.pid 2>/dev/null) && kill -TERM $p 2>/dev/null;"
        f" for i in $(seq 1 {int(timeout * 5)}); do kill -0 $p 2>/dev/null || exit 0; sleep 0.2; done;"
        " kill -KILL $p; exit 1",
        timeout=timeout + 15,
    )
    return lab.read_text(f"/tmp/{name}.out"), lab.read_text(f"/tmp/{name}.log")


def serve_cmd(port: int) -> str:
    return f"python3 -m xenlab.transfer serve --port {port} --bind 0.0.0.0"


def transfer_lines(server: str, port: int) -> str:
    return (
        # the first reply may take a while (ARP, the driver's TAP coming up): then count 5
        f"for i in $(seq 1 30); do ping -c 1 -W 2 {server} >/dev/null && break; done\n"
        f'ping -c 5 -W 5 {server}; echo "PING rc=$?"\n'
        f"python3 -m xenlab.transfer client {server} --port {port} "
        f'--get {N} --put {N} --seed {SEED} --connect-timeout 120; echo "CLIENT rc=$?"\n'
    )


def check_transfer(console: str, server_log: str, peer_ip: str) -> dict[str, Any]:
    expected = xf.expected_sha256(N, SEED)
    assert "PING rc=0" in console, console
    lines = {d["kind"]: d for d in xf.parse_lines(console)}
    assert set(lines) == {"get", "put"}, console
    get, put = lines["get"], lines["put"]
    assert (get["bytes"], get["sha256"]) == (str(N), expected), console
    assert (put["bytes"], put["peer_bytes"]) == (str(N), str(N)), console
    assert put["sha256"] == put["peer_sha256"] == expected, console
    assert "CLIENT rc=0" in console, console
    assert f"XFER-SERVE get peer={peer_ip}:" in server_log, server_log
    assert f"XFER-SERVE put peer={peer_ip}:" in server_log, server_log
    rtt = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)", console)
    return {
        "ping_rtt_avg_ms": float(rtt.group(2)) if rtt else None,
        "get_MiB_s": round(N / 2**20 / float(get["secs"]), 2),
        "put_MiB_s": round(N / 2**20 / float(put["secs"]), 2),
    }


def last_json(text: str, key: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and key in line:
            return dict(json.loads(line))
    raise AssertionError(f"no JSON result with {key!r} in:\n{text[-3000:]}")


def report(
    label: str,
    vcpus: int,
    figures: dict[str, Any],
    s: dict[str, Any],
    t_done: float,
    t0: float,
    record_property: pytest.RecordProperty,
) -> None:
    """Record the run's figures (junit properties; ``vcpus`` picks CI's baseline) and print
    them on one line."""
    figures.update(
        {
            "vcpus": vcpus,
            "create_to_done_s": round(t_done, 1),
            "tx_gso_packets": s["tx_gso_packets"],
            "rx_gso_packets": s["rx_gso_packets"],
            "tx_slots_per_packet": round(s["tx_slots"] / s["tx_packets"], 2),
            "rx_slots_per_packet": round(s["rx_slots"] / s["rx_packets"], 2),
            "test_wall_s": round(time.monotonic() - t0, 1),
        }
    )
    for k, v in figures.items():
        record_property(k, v)
    print(f"\n[xenlab figures] {label}, {vcpus} vCPU(s): {figures}")


@VCPUS
def test_xennet_netback_serves_kernel_netfront(
    lab: Lab, record_property: pytest.RecordProperty, vcpus: int
) -> None:
    t0 = time.monotonic()
    name, port, mac = "xnb", 7002, "00:16:3e:00:00:20"
    back_ip, domu_ip = f"{PYVIF_NET}.1", f"{PYVIF_NET}.2"
    start_bg(lab, "xfer-nb", f"python3 -m xenlab.transfer serve --port {port} --bind 0.0.0.0", "listening")
    start_bg(
        lab,
        "netback",
        f"python3 -m xennet -v xen netback --kind pyvif --address {back_ip}/24 --json",
        "serving",
    )
    script = (
        "for i in $(seq 1 300); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done\n"
        f"ip addr add {domu_ip}/24 dev eth0 && ip link set eth0 up || echo '=== eth0 setup FAILED'\n"
        "for k in feature-sg feature-gso-tcpv4 feature-gso-tcpv6 request-rx-copy; do"
        ' echo "FRONT $k=$(xenstore-read device/vif/0/$k)"; done\n' + transfer_lines(back_ip, port)
    )
    netback_out = netback_log = server_log = console = ""
    domid = -1
    try:
        domid = lab.start_domu(
            name,
            script,
            vifs=[],
            kernel_netfront=True,
            vcpus=vcpus,
            before_unpause=lambda d: lab.check(f"python3 -m xennet xen attach {d} --kind pyvif mac={mac}"),
        )
        console = lab.wait_domu(name, guest.DOMU_DONE_MARKER, timeout=720)
        t_done = lab.domu_age(name)
        server_log = lab.read_text("/tmp/xfer-nb.log") + lab.read_text("/tmp/xfer-nb.out")
    finally:
        lab.destroy_domu(name)
        # our netback reaps the directories of a domain that is gone
        rc, reaped = lab.run(
            f"for i in $(seq 1 100); do xenstore-exists /local/domain/0/backend/pyvif/{domid}/0"
            " || { echo reaped; exit 0; }; sleep 0.2; done; exit 1",
            timeout=40,
        )
        stop_bg(lab, "xfer-nb")
        netback_out, netback_log = stop_bg(lab, "netback")
        print(f"\n--- dom0 netback log (tail)\n{netback_log[-3000:]}\n--- transfer server\n{server_log}")
    figures = check_transfer(console, server_log, domu_ip)
    for k in ("feature-sg", "feature-gso-tcpv4", "request-rx-copy"):
        assert f"FRONT {k}=1" in console, console
    assert rc == 0, f"backend directory not removed after the domU went away:\n{netback_log[-3000:]}"

    result = last_json(netback_out, '"vifs"')
    (vif,) = result["vifs"].values()
    s = vif["stats"]
    assert s["tx_packets"] > 0 and s["rx_packets"] > 0, s
    assert s["tx_gso_packets"] > 0, f"the kernel netfront sent no GSO packets: {s}"
    assert s["rx_gso_packets"] > 0, f"no GSO packets delivered to the kernel netfront: {s}"
    assert s["tx_slots"] > s["tx_packets"], f"no multi-slot tx packet: {s}"
    assert s["rx_slots"] > s["rx_packets"], f"no multi-slot rx packet: {s}"
    assert not s["tx_errors"] and not s["rx_dropped"], s
    assert set(s["fatal"]) <= {"peer_gone"}, s
    assert result["accounting"] == {"pages": 0, "grants": 0, "maps": 0, "ports": 0}, result
    assert "Traceback" not in netback_log, netback_log[-3000:]
    # the kernel netfront takes the split event channels our netback offers (README claim)
    assert "(split event channels)" in netback_log, netback_log[-3000:]

    report("xennet netback <-> kernel xen-netfront", vcpus, figures, s, t_done, t0, record_property)


@pytest.mark.parametrize(
    ("grants", "vcpus"),
    [("pool", 1), ("per-packet", 1), ("pool", 2)],
    ids=["pool-1vcpu", "per-packet-1vcpu", "pool-2vcpu"],
)
def test_xennet_netfront_talks_to_kernel_netback(
    lab: Lab, record_property: pytest.RecordProperty, grants: str, vcpus: int
) -> None:
    """Pre-granted pools and Linux's per-packet grants: the kernel netback must not tell them apart."""
    t0 = time.monotonic()
    k = ("pool", "per-packet").index(grants)
    name, port, mac = f"xnf{k}", 7003 + k, f"00:16:3e:00:00:3{k}"
    domu_ip = f"192.0.2.{30 + k}"
    start_bg(lab, "xfer-nf", f"python3 -m xenlab.transfer serve --port {port} --bind 0.0.0.0", "listening")
    script = (
        "lsmod | grep -q '^xen_netfront' && echo '=== xen-netfront is loaded: FAILED'\n"
        f"python3 -m xennet -v xen netfront --tap xnf0 --address {domu_ip}/24 --json grants={grants}"
        " >/tmp/nf.out 2>/tmp/nf.log &\nNF=$!\n"
        "for i in $(seq 1 600); do grep -q 'connected; frames go to TAP' /tmp/nf.log && break;"
        " kill -0 $NF || break; sleep 0.1; done\n"
        'echo "STEP connected $(cut -d" " -f1 /proc/uptime)"; cat /tmp/nf.log\n'
        + transfer_lines(guest.BRIDGE_ADDR, port)
        + 'echo "STEP transferred $(cut -d" " -f1 /proc/uptime)"\n'
        'kill -TERM $NF; wait $NF; echo "NETFRONT rc=$?"\n'
        'echo "STEP closed $(cut -d" " -f1 /proc/uptime)"\n'
        'echo "NFJSON $(tail -n 1 /tmp/nf.out)"\n'
        "tail -n 20 /tmp/nf.log\n"
    )
    server_log = console = ""
    try:
        lab.start_domu(
            name, script, vifs=[f"bridge={guest.BRIDGE},mac={mac}"], kernel_netfront=False, vcpus=vcpus
        )
        console = lab.wait_domu(name, guest.DOMU_DONE_MARKER, timeout=720)
        t_done = lab.domu_age(name)
        server_log = lab.read_text("/tmp/xfer-nf.log") + lab.read_text("/tmp/xfer-nf.out")
    finally:
        lab.destroy_domu(name)
        stop_bg(lab, "xfer-nf")
        print(f"\n--- transfer server\n{server_log}")
    assert "xen-netfront is loaded" not in console, console
    figures = check_transfer(console, server_log, domu_ip)
    assert "NETFRONT rc=0" in console, console
    m = re.search(r"^NFJSON (\{.*\})\s*$", console, re.M)
    assert m is not None, console
    result = json.loads(m.group(1))
    s = result["stats"]
    assert result["state"] == "Closed", result
    assert s["tx_packets"] > 0 and s["rx_packets"] > 0, s
    assert s["tx_gso_packets"] > 0, f"no GSO packets sent to the kernel netback: {s}"
    assert s["rx_gso_packets"] > 0, f"the kernel netback delivered no GSO packets: {s}"
    assert s["tx_slots"] > s["tx_packets"] and s["rx_slots"] > s["rx_packets"], s
    assert not s["tx_errors"] and not s["rx_errors"], s
    assert s["grants_held_by_peer"] == 0, s
    assert result["accounting"] == {"pages": 0, "grants": 0, "maps": 0, "ports": 0}, result
    assert "Traceback" not in console, console
    tap = result["tap"]  # GRO (gro=1, the default) into the guest's stack
    assert tap["gro_segments"] >= 2 * tap["gro_frames"], tap
    figures.update(gro_frames=tap["gro_frames"], gro_segments=tap["gro_segments"])

    report(
        f"xennet netfront (grants={grants}) <-> kernel xen-netback",
        vcpus,
        figures,
        s,
        t_done,
        t0,
        record_property,
    )
    print("\n".join(ln for ln in console.splitlines() if "uptime" in ln or ln.startswith("STEP")))
