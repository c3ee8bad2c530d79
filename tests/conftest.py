"""What every tier shares: a test must say which tier it belongs to.

`make test PYTEST_ARGS="-m unit"` and CI's per-tier figures select tests by marker, so a test without
one would silently run in no tier's selection. Collection fails instead, naming each such test.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]  # tests/unit/test_tier_markers.py runs this hook in a scratch project

TIERS = ("unit", "dags", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: {'no tier marker' if not tiers else 'several: ' + ', '.join(tiers)}")
    if problems:
        listed = "\n  ".join(problems)
        raise pytest.UsageError(
            f"every test carries exactly one tier marker ({', '.join(TIERS)}), e.g. "
            f"`pytestmark = pytest.mark.unit`:\n  {listed}"
        )
