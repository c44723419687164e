from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from xennet.world.local import LocalWorld

# Timing is not what the properties are about, and the machine is shared: no deadlines.
# In CI the examples are derandomized so a submission is judged on a repeatable run.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

if os.environ.get("XENNET_FUZZ_RECORD"):  # scripts/fuzz-core.sh: seed the corpus from real calls
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))  # where pytest puts it for tests/core/
    from core.fuzz import record

    per_kernel = int(os.environ.get("XENNET_FUZZ_RECORD_PER", "40"))
    record.install(Path(os.environ["XENNET_FUZZ_RECORD"]), per_kernel)


STRICT_SKIPS = os.environ.get("XENNET_STRICT_SKIPS", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With XENNET_STRICT_SKIPS=1 (CI) a skipped test fails: scripts/install.sh installs every
    tool a test needs, so a skip there means a missing install step, not a missing machine."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and XENNET_STRICT_SKIPS=1 makes a skip a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a module that skips itself whole (``allow_module_level``)."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT_SKIPS and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and XENNET_STRICT_SKIPS=1 makes a skip a failure: {reason}"


@pytest.fixture
def world() -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        yield w
