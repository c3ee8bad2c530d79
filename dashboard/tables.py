"""Tables as a person reads them: headers in words, times to the second, counts with separators.

`show()` wraps `st.dataframe` and builds the column configuration from the frame's own types, so every
table on every page reads the same way; a page passes only what is special (a link, a wide column).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

TIME_FORMAT = "YYYY-MM-DD HH:mm:ss"


def _is_time_column(values: pd.Series) -> bool:
    present = values.dropna()
    return bool(len(present)) and all(isinstance(v, datetime | pd.Timestamp) for v in present)


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of times (with gaps) as UTC datetimes, so an empty cell shows empty and not "None"."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and _is_time_column(out[column]):
            out[column] = pd.to_datetime(out[column], utc=True)
    return out


def column_config(frame: pd.DataFrame, special: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A readable configuration for each column of `frame` (its dtypes after `prepare`)."""
    config: dict[str, Any] = {}
    for column in frame.columns:
        label = str(column).replace("_", " ")
        dtype = frame[column].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            config[column] = st.column_config.DatetimeColumn(f"{label} (UTC)", format=TIME_FORMAT)
        elif pd.api.types.is_integer_dtype(dtype):
            config[column] = st.column_config.NumberColumn(label, format="localized")
        elif pd.api.types.is_float_dtype(dtype):
            config[column] = st.column_config.NumberColumn(label, format="%.2f")
        else:
            config[column] = st.column_config.Column(label)
    config.update(special or {})
    return config


def show(frame: pd.DataFrame, key: str, special: Mapping[str, Any] | None = None) -> None:
    """`st.dataframe` of `frame` with readable headers and formats; `special` overrides single columns."""
    ready = prepare(frame)
    st.dataframe(ready, hide_index=True, width="stretch", key=key, column_config=column_config(ready, special))
