"""The real-Xen tests (marked ``xen``): one lab (Xen + dom0 under QEMU) per session, built if needed.

``lab`` skips with the preflight reason when this machine cannot run the lab (not root, too little
memory or disk, no apt / host tools that cannot be installed); a failing build or boot fails the test.
Every step has its own timeout, and xen tests get a pytest timeout that covers a cold build, so
nothing hangs.  When a ``xen`` test fails, its report gets a "xenlab consoles" section: the Xen and
dom0 console, ``xl list`` and every domU's console log.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator

import pytest

from xenlab import preflight as pf
from xenlab.build import BuildError, BuildResult, build, install_host_tools
from xenlab.lab import Lab, LabError, up

BUILD_TIMEOUT = 15 * 60
BOOT_TIMEOUT = 4 * 60
#: pytest timeout for a xen test without its own: the session's first test also builds and boots
XEN_TEST_TIMEOUT = BUILD_TIMEOUT + BOOT_TIMEOUT + 10 * 60

LAB = pytest.StashKey[Lab]()
BUILD = pytest.StashKey[BuildResult]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xen") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(XEN_TEST_TIMEOUT))


def _say(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="session")
def lab_build(request: pytest.FixtureRequest) -> BuildResult:
    """The lab's images, built (or found cached) once per session; skips if the machine cannot."""
    workdir = pf.default_workdir()
    problems = pf.check_root() + pf.check_disk(workdir) + pf.check_memory()
    if problems:
        pytest.skip("xenlab: " + pf.reason(problems))
    # probes the Debian mirror only before the first build
    problems = pf.blocking(pf.preflight_build(workdir))
    if problems:
        pytest.skip("xenlab build: " + pf.reason(problems))
    try:
        install_host_tools(_say)  # qemu, debootstrap, busybox-static ... (apt-get)
    except BuildError as e:
        pytest.skip(f"xenlab: cannot install the host tools: {e}")
    t0 = time.monotonic()
    try:
        res = build(workdir, progress=_say)
    except BuildError as e:
        pytest.fail(f"xenlab build failed: {e}")
    built = {k: round(v, 1) for k, v in res.timings.items() if k not in res.cached}
    _say(f"[xenlab] build {time.monotonic() - t0:.1f}s; steps run: {built}; cached: {res.cached}")
    request.config.stash[BUILD] = res
    return res


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest, lab_build: BuildResult) -> Iterator[Lab]:
    """A running lab (dom0 ready, shell answering), shared by the session's xen tests."""
    problems = pf.preflight_up(lab_build.workdir)
    if problems:
        pytest.skip("xenlab up: " + pf.reason(problems))
    try:
        the_lab = up(lab_build.workdir, timeout=BOOT_TIMEOUT, progress=_say)
    except LabError as e:
        pytest.fail(f"xenlab boot failed: {e}")
    _say(f"[xenlab] boot timings: { {k: round(v, 1) for k, v in the_lab.timings.items()} }")
    request.config.stash[LAB] = the_lab
    try:
        yield the_lab
    finally:
        del request.config.stash[LAB]
        the_lab.down()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    if rep.failed and item.get_closest_marker("xen") is not None:
        the_lab = item.config.stash.get(LAB, None)
        if the_lab is not None:
            text = the_lab.consoles()
            rep.sections.append(("xenlab consoles", text))
            try:
                (the_lab.workdir / "failure-consoles.txt").write_text(f"{item.nodeid} ({rep.when})\n{text}\n")
            except OSError:
                pass
    return rep
