"""CI cannot pass by skipping: with XENNET_STRICT_SKIPS=1 every kind of skip fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_skips_inside():
    pytest.skip("no frobnicator installed")

@pytest.mark.skipif(True, reason="marker says no")
def test_skipped_by_marker():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
"""


@pytest.fixture
def tree(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("XENNET_FUZZ_RECORD", raising=False)  # the copied conftest records nothing
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_skipping=SKIPPING)
    pytester.makepyfile(
        test_module_skip='import pytest\npytest.skip("whole module", allow_module_level=True)\n'
    )
    return pytester


def test_strict_skips_fail(tree: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENNET_STRICT_SKIPS", "1")
    result = tree.runpytest_subprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    assert result.ret != 0
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1)
    out = result.stdout.str()
    assert "failure: Skipped: no frobnicator installed" in out and "failure: Skipped: whole module" in out


def test_without_strict_skips_they_skip(tree: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XENNET_STRICT_SKIPS", raising=False)
    result = tree.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
