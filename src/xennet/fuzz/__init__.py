"""Fuzzing campaigns over every parser of peer-controlled bytes (``xennet fuzz``).

Each target is a ``Harness`` (``harness.py``) that feeds one input to the real code and says
what went wrong: an exception that escaped (a crash), or after teardown an account that is
not back to zero (a leak).  ``runner.py`` runs one target under atheris in a child process;
``campaign.py`` starts the children, catches crashes and hangs, and writes the report.

Importing this package imports nothing else of xennet: the runner must import the code under
test inside ``atheris.instrument_imports`` to get coverage feedback from it.
"""

from __future__ import annotations

from typing import NamedTuple


class Target(NamedTuple):
    module: str  # holds the target's ``Harness`` class
    instrument: tuple[str, ...]  # the code under test: atheris instruments these for coverage
    about: str


TARGETS: dict[str, Target] = {
    "tx-requests": Target(
        "xennet.fuzz.tx",
        ("xennet.netback", "xennet.ring"),
        "a netback vif fed hostile tx ring requests and extra-info chains",
    ),
    "rx-responses": Target(
        "xennet.fuzz.rx",
        ("xennet.netfront", "xennet.ring"),
        "a netfront fed hostile rx ring responses",
    ),
    "xs-wire": Target(
        "xennet.fuzz.xs", ("xennet.xenstore",), "xs_wire bytes into the xenstored core as a guest connection"
    ),
    "vnet": Target(
        "xennet.fuzz.vnet",
        ("xennet.ports", "xennet.packet"),
        "virtio-net headers and frames read from a TAP, then GSO segmentation and checksums",
    ),
    "core": Target(
        "xennet.fuzz.core",
        ("xennet.core.pure",),
        "the data-plane kernels: pure twin against the compiled core",
    ),
}
# Harnesses that fail on purpose, so tests can show that each kind of failure is caught.
SELFTESTS: dict[str, Target] = {
    f"selftest-{kind}": Target("xennet.fuzz.selftest", (), f"a harness that {what} on a magic byte")
    for kind, what in (("crash", "raises"), ("leak", "leaks"), ("hang", "sleeps"))
}
ALL = {**TARGETS, **SELFTESTS}
