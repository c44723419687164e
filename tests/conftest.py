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
settings.load_profile("ci" if os.environ.get("CI") else "dev")

if os.environ.get("XENNET_FUZZ_RECORD"):  # scripts/fuzz-core.sh: seed the corpus from real calls
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))  # where pytest puts it for tests/core/
    from core.fuzz import record

    per_kernel = int(os.environ.get("XENNET_FUZZ_RECORD_PER", "40"))
    record.install(Path(os.environ["XENNET_FUZZ_RECORD"]), per_kernel)


@pytest.fixture
def world() -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        yield w
