"""domUs in the lab: the baseline with Linux's own drivers on both ends (xen-netfront in a domU,
xen-netback in dom0, over dom0's bridge xenbr0).  Later tests swap one end for xennet's driver."""

from __future__ import annotations

import re
import time

import pytest

from xenlab import guest
from xenlab import transfer as xf
from xenlab.lab import Lab

pytestmark = [pytest.mark.xen, pytest.mark.slow]

PORT = 7001
SEED = 7
N = xf.PAIRING_BYTES
DOMU_IP = "192.0.2.10"


def start_server(lab: Lab, port: int, log: str) -> None:
    """``transfer serve`` in dom0, in the background; returns once it listens."""
    lab.check(
        f"setsid python3 -m xenlab.transfer serve --port {port} --bind 0.0.0.0 "
        f"</dev/null >{log} 2>&1 & echo $! >{log}.pid\n"
        f"for i in $(seq 1 150); do grep -q listening {log} && exit 0; sleep 0.2; done; cat {log}; exit 1",
        timeout=60,
    )


def stop_server(lab: Lab, log: str) -> None:
    lab.run(f"[ -e {log}.pid ] && kill $(cat {log}.pid) 2>/dev/null; rm -f {log}.pid; true", timeout=30)


def client_script(*, get: int, put: int, seed: int, port: int) -> str:
    """The domU's job: address eth0, ping dom0, then get and put with the transfer client."""
    return f"""
for i in $(seq 1 300); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip addr add {DOMU_IP}/24 dev eth0 && ip link set eth0 up || echo "=== eth0 setup FAILED"
ping -c 3 -W 5 {guest.BRIDGE_ADDR}
echo "PING rc=$?"
python3 -m xenlab.transfer client {guest.BRIDGE_ADDR} --port {port} \\
  --get {get} --put {put} --seed {seed} --connect-timeout 60
rc=$?
echo "CLIENT rc=$rc"
exit $rc
"""


@pytest.mark.parametrize("vcpus", [1, 2], ids=["1vcpu", "2vcpu"])
def test_kernel_netfront_kernel_netback(lab: Lab, record_property: pytest.RecordProperty, vcpus: int) -> None:
    """The baseline each pairing's figures are divided by, for a guest of 1 and of 2 vCPUs."""
    t_test = time.monotonic()
    name, log = "kk", "/tmp/xfer-kk.log"
    expected = xf.expected_sha256(N, SEED)
    start_server(lab, PORT, log)
    try:
        lab.start_domu(
            name,
            client_script(get=N, put=N, seed=SEED, port=PORT),
            vifs=[f"bridge={guest.BRIDGE},mac=00:16:3e:00:00:10"],
            kernel_netfront=True,
            vcpus=vcpus,
        )
        lab.wait_domu(name, guest.DOMU_SCRIPT_MARKER, timeout=240)
        t_ready = lab.domu_age(name)
        console = lab.wait_domu(name, guest.DOMU_DONE_MARKER, timeout=300)
        t_done = lab.domu_age(name)
        server_log = lab.read_text(log)
    finally:
        stop_server(lab, log)
        lab.destroy_domu(name)

    assert "PING rc=0" in console, console
    m = re.search(r"(\d+) packets transmitted, (\d+) received", console)
    assert m is not None and int(m.group(2)) >= 1, console
    rtt = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)", console)
    lines = {d["kind"]: d for d in xf.parse_lines(console)}
    assert set(lines) == {"get", "put"}, console
    get, put = lines["get"], lines["put"]
    assert (get["bytes"], get["sha256"]) == (str(N), expected), console
    assert (put["bytes"], put["peer_bytes"]) == (str(N), str(N)), console
    assert put["sha256"] == put["peer_sha256"] == expected, console
    assert "CLIENT rc=0" in console and f"{guest.DOMU_DONE_MARKER} rc=0" in console, console
    assert "XFER-SERVE get peer=192.0.2.10:" in server_log and "XFER-SERVE put peer=192.0.2.10:" in server_log

    figures = {
        "vcpus": vcpus,
        "xl_create_s": round(lab.timings[f"domu_{name}_create"], 1),
        "create_to_script_start_s": round(t_ready, 1),
        "create_to_done_s": round(t_done, 1),
        "ping_rtt_avg_ms": float(rtt.group(2)) if rtt else None,
        "get_MiB_s": round(N / 2**20 / float(get["secs"]), 2),
        "put_MiB_s": round(N / 2**20 / float(put["secs"]), 2),
        "test_wall_s": round(time.monotonic() - t_test, 1),
    }
    for k, v in figures.items():
        record_property(k, v)
    print(f"\n[xenlab figures] kernel netfront <-> kernel netback, {vcpus} vCPU(s): {figures}")
