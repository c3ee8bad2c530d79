"""Two computations of the same features compared: exact where the module is exact, 1e-12 elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from candlelake.analytics.features import Features

EXACT = ("open_time_us", "close", "ma_1m", "ma_5m", "ma_15m", "return_1m", "log_return_1m")
"""The book and the whole-history path do the same Decimal operations for these: equal to the last digit."""
CLOSE = ("volatility_15m", "return_z", "volume_z", "trades_z")
"""Means and deviations, by exact sums in the book and by numpy over a whole history: within 1e-12."""


def assert_same_features(ours: Sequence[Features], theirs: Sequence[Features]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        for name in EXACT:
            assert getattr(a, name) == getattr(b, name), (name, a.open_time_us)
        for name in CLOSE:
            got, want = getattr(a, name), getattr(b, name)
            assert (got is None) == (want is None), (name, a.open_time_us, got, want)
            if want is not None:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (name, a.open_time_us)
