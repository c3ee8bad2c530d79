"""Argument types shared by the Spark jobs' command lines (jobs/): one rule, one message each.

Each raises `argparse.ArgumentTypeError`, which argparse prints as `error: argument --date: ...` after
the usage, never as a traceback.
"""

from __future__ import annotations

import argparse
import re
from datetime import date

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def utc_day(text: str) -> date:
    """A UTC day written YYYY-MM-DD (and only so: fromisoformat also takes 20261120 and 2026-W47-5)."""
    try:
        if not _DAY.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def exchange_name(text: str) -> str:
    """An exchange's name as the lake partitions it (`exchange=<name>`): no path or partition syntax."""
    name = text.strip()
    if not name or any(c in name for c in "/=\\") or name.startswith((".", "_")):
        raise argparse.ArgumentTypeError(f"not an exchange name: {text!r}")
    return name
