"""``xennet link --chaos``: kill either end of a link (kill -9) in the middle of a TCP transfer,
let the toolstack restart it, and check every byte arrived.

The transfer is a paced stream from the guest namespace to the host namespace; both ends
hash what they moved (sha256), so a byte lost, doubled or changed across an outage shows.
TCP retransmits across the outage: the guest's NIC (its TAP) survives a backend restart, the
host's TAP is made again with the same name, address and MAC, and a restarted guest gets the
same MAC and address on a new domain.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import IO, Any

from .link import Link

_SERVER = """
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n, told = hashlib.sha256(), 0, 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    h.update(d)
    n += len(d)
    if n - told >= 1 << 18:
        print("got", n, flush=True)
        told = n
print("done", n, h.hexdigest(), flush=True)
"""

# Sends os.urandom chunks at ``rate`` bytes/s until ``nbytes`` are sent or SIGTERM.
_CLIENT = """
import hashlib, os, signal, socket, sys, time
host, port, nbytes, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.create_connection((host, port), timeout=10)
s.settimeout(None)
h, n, t0 = hashlib.sha256(), 0, time.monotonic()
while n < nbytes and not stop:
    d = os.urandom(min(1 << 16, nbytes - n))
    s.sendall(d)
    h.update(d)
    n += len(d)
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)  # pacing, so the stream spans the kills
s.shutdown(socket.SHUT_WR)
s.recv(1)  # the server closes after it has read everything
print("sent", n, h.hexdigest(), flush=True)
"""


class HashedTransfer:
    """A paced TCP stream guest -> host through the link, sha256 on both ends.  ``received``
    is what the server has read so far (its progress lines)."""

    def __init__(self, lk: Link, nbytes: int, rate: float, port: int = 5099, timeout: float = 20) -> None:
        a = lk.addr
        self.received = 0
        self.server_done: tuple[int, str] | None = None
        self._cond = threading.Condition()
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", a.host_ns, sys.executable, "-c", _SERVER, a.host_ip, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.client: subprocess.Popen[str] | None = None
        self._listening = False
        self._reader = threading.Thread(target=self._read, args=(self.server.stdout,), daemon=True)
        self._reader.start()
        try:
            with self._cond:
                if not self._cond.wait_for(
                    lambda: self._listening or self.server.poll() is not None, timeout
                ):
                    raise TimeoutError("the transfer's server did not listen in time")
            if not self._listening:
                raise RuntimeError(f"the transfer's server exited with {self.server.returncode}")
            self.client = subprocess.Popen(
                ["ip", "netns", "exec", a.guest_ns, sys.executable, "-c", _CLIENT, a.host_ip, str(port),
                 str(nbytes), str(rate)],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def _read(self, out: IO[str] | None) -> None:
        assert out is not None
        for line in out:
            word, *rest = line.split()
            with self._cond:
                if word == "listening":
                    self._listening = True
                elif word == "got":
                    self.received = int(rest[0])
                elif word == "done":
                    self.received = int(rest[0])
                    self.server_done = (int(rest[0]), rest[1])
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_received(self, nbytes: int, timeout: float) -> bool:
        """Until the server has read ``nbytes`` (or the stream ended): False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    self.received >= nbytes or self.server_done is not None or self.server.poll() is not None
                ),
                timeout,
            ) and (self.received >= nbytes or self.server_done is not None)

    @property
    def done(self) -> bool:
        return self.server_done is not None

    def finish(self, timeout: float = 60, stop: bool = False) -> dict[str, Any]:
        """End the stream (``stop``: now, else when all is sent) and compare both hashes."""
        assert self.client is not None
        if stop and self.client.poll() is None:
            self.client.send_signal(signal.SIGTERM)
        try:
            out, _ = self.client.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # the link never came back: report, do not hang
            self.client.kill()
            out, _ = self.client.communicate()
        if self.client.returncode and self.server.poll() is None:
            self.server.kill()  # the client gave up: over a dead link no EOF reaches the server
        self._reader.join(timeout)
        sent = out.split()
        got = self.server_done
        ok = len(sent) == 3 and got is not None and int(sent[1]) == got[0] and sent[2] == got[1]
        return {
            "sent": int(sent[1]) if len(sent) == 3 else None,
            "received": got[0] if got else self.received,
            "sha256_sent": sent[2] if len(sent) == 3 else None,
            "sha256_received": got[1] if got else None,
            "match": ok,
        }

    def close(self) -> None:
        for p in (self.client, self.server):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait(5)


@dataclass
class KillOutcome:
    end: str  # "backend" | "guest"
    at_s: float  # since the transfer started
    bytes_at_kill: int  # what the server had read when the end was killed
    reconnected_after_s: float | None  # kill -> both ends Connected again, TAPs up
    resumed_after_s: float | None  # kill -> the server read 1 MiB more (or the stream ended)
    bytes_verified: int  # what the server had read once traffic resumed; hashed at the end
    outcome: str  # "recovered" | "not reconnected: ..." | "not resumed"


def kill_and_restart(lk: Link, transfer: HashedTransfer, end: str, t0: float) -> KillOutcome:
    """kill -9 one end mid-stream, let the toolstack restart it, wait for the stream to move."""
    before, t_kill = transfer.received, time.monotonic()
    reconnected: float | None = None
    resumed: float | None = None
    outcome = "recovered"
    try:
        reconnected = lk.restart_backend() if end == "backend" else lk.restart_guest()
    except Exception as exc:  # report it as this kill's outcome; the caller decides
        outcome = f"not reconnected: {exc}"
    if reconnected is not None:
        if transfer.wait_received(before + (1 << 20), 30):
            resumed = time.monotonic() - t_kill
        else:
            outcome = "not resumed"
    return KillOutcome(end, round(t_kill - t0, 3), before, reconnected, resumed, transfer.received, outcome)


def run_chaos(
    lk: Link,
    seconds: float,
    *,
    seed: int | None = None,
    rate: float = 8 << 20,
    max_kills: int | None = None,
    ends: tuple[str, ...] = ("backend", "guest"),
) -> dict[str, Any]:
    """For ``seconds``, kill a random end at random intervals (0.5-2 s of traffic between
    kills) during a paced transfer; then let the stream end and check the hashes."""
    rng = random.Random(seed)
    transfer = HashedTransfer(lk, nbytes=1 << 40, rate=rate)  # ended by finish(stop=True)
    kills: list[KillOutcome] = []
    try:
        t0 = time.monotonic()
        transfer.wait_received(1 << 20, 20)
        while time.monotonic() - t0 < seconds and (max_kills is None or len(kills) < max_kills):
            # traffic between kills: a random share of the stream, observed at the server
            if not transfer.wait_received(transfer.received + int(rate * rng.uniform(0.5, 2.0)), 30):
                break
            kills.append(kill_and_restart(lk, transfer, rng.choice(ends), t0))
            if kills[-1].outcome != "recovered":
                break
        check = transfer.finish(timeout=60, stop=True)
    finally:
        transfer.close()
    return {
        "seconds": round(time.monotonic() - t0, 3),
        "seed": seed,
        "kills": [asdict(k) for k in kills],
        "transfer": check,
        "all_recovered": bool(kills) and all(k.outcome == "recovered" for k in kills) and check["match"],
    }
