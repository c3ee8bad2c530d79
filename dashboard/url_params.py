"""Links carry the view in the URL (widgets bound with `bind="query-params"`). A value the page does not
offer (mistyped, stale, or hostile) is never used: the widget falls back to its default and the page
says which value it ignored, instead of silently showing something else.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st


def warn_unknown(key: str, allowed: Sequence[str], what: str, where: object = st) -> None:
    """Show a warning when the URL's `key` holds a value outside `allowed` (call before the widget)."""
    value = st.query_params.get(key)
    if value is not None and value not in allowed:
        shown = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
        where.warning(f"Unknown {what} {value!r} in the link; showing the default instead. Known: {shown}")  # type: ignore[attr-defined]
