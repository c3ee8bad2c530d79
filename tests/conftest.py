"""What every tier shares: a test must say which tier it belongs to.

`make test PYTEST_ARGS="-m unit"` and CI's per-tier figures select tests by marker, so a test without
one would silently run in no tier's selection. Collection fails instead, naming each such test.

`make test` runs the tiers on two pytest-xdist workers (`-n 2 --dist loadgroup`): the integration and
e2e tests share the platform's ports and PostgreSQL, so they form one group that one worker runs in
order, while the unit and DAG tests, which start nothing, take the other worker (and finish while the
e2e tier is still starting the platform).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]  # tests/unit/test_tier_markers.py runs this hook in a scratch project

TIERS = ("unit", "dags", "integration", "e2e")
# The tiers that start real parts on the configured ports: one xdist worker runs all of them, in order.
SERVICE_TIERS = ("integration", "e2e")
SERVICES_GROUP = "services"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: {'no tier marker' if not tiers else 'several: ' + ', '.join(tiers)}")
        elif tiers[0] in SERVICE_TIERS:
            item.add_marker(pytest.mark.xdist_group(SERVICES_GROUP))
    if problems:
        listed = "\n  ".join(problems)
        raise pytest.UsageError(
            f"every test carries exactly one tier marker ({', '.join(TIERS)}), e.g. "
            f"`pytestmark = pytest.mark.unit`:\n  {listed}"
        )
