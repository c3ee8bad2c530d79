"""Small helpers every stage shares."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception as one line for a log or a message: its text's first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
