"""tests/conftest.py refuses a test without exactly one tier marker, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

HOOK = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()
MARKERS = "[pytest]\nmarkers =\n    unit: u\n    dags: d\n    integration: i\n    e2e: e\n"


def test_an_unmarked_or_twice_marked_test_fails_collection_by_name(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOK.replace('pytest_plugins = ["pytester"]', ""))
    pytester.makeini(MARKERS)
    pytester.makepyfile(
        test_sample="""
import pytest

@pytest.mark.unit
def test_marked(): pass

def test_forgotten(): pass

@pytest.mark.unit
@pytest.mark.e2e
def test_torn(): pass
"""
    )
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_sample.py::test_forgotten: no tier marker*", "*test_torn: several: e2e, unit*"])
    assert "test_marked" not in result.stderr.str()


def test_marked_tests_collect(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOK.replace('pytest_plugins = ["pytester"]', ""))
    pytester.makeini(MARKERS)
    pytester.makepyfile(test_sample="import pytest\npytestmark = pytest.mark.dags\ndef test_one(): pass\n")
    assert pytester.runpytest("--collect-only", "-q").ret == pytest.ExitCode.OK
