"""Quality page: is the data right? The latest Great Expectations results (with their Data Docs pages),
the gap ledger, the nightly batch's late-data corrections, dead letters by reason, how many candles
are live, closed or curated, and how much of each day each market was covered.

Every section reads PostgreSQL through `dashboard.quality_data`; a section whose table cannot be read
says so and the others still render.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from candlelake.nightly.quality.outcomes import Failure
from dashboard import data, quality_data, tables, url_params

PERIODS = {"24h": 1, "7 days": 7, "30 days": 30}
DEFAULT_PERIOD = "7 days"


def _failures_text(failures: Any) -> str:
    if not failures:
        return ""
    items = failures if isinstance(failures, list) else [failures]
    sentences = [Failure.from_dict(item).sentence() if isinstance(item, dict) else str(item) for item in items]
    more = f" (and {len(sentences) - 3} more)" if len(sentences) > 3 else ""
    return " | ".join(sentences[:3]) + more


def _rows(load: Callable[[], pd.DataFrame], empty: str, *, empty_is_good: bool = False) -> pd.DataFrame | None:
    """A section's rows; None when there are none to show, once the page has said why (the query failed,
    or `empty`: good news, or only information)."""
    rows = data.section(load)
    if rows is not None and rows.empty:
        if empty_is_good:
            st.success(empty)
        else:
            st.info(empty)
        return None
    return rows


def _validations() -> None:
    st.subheader("Validations", anchor="validations")
    latest = _rows(
        quality_data.latest_validations,
        "No validation has run yet. The nightly `data_quality` DAG validates each day after compaction; "
        "trigger it in Airflow to validate now.",
    )
    if latest is None:
        return
    failed = latest[~latest["success"]]
    if failed.empty:
        st.success(f"The latest validation of each exchange and suite passed ({len(latest)} suites).")
    else:
        for row in failed.itertuples(index=False):
            st.error(
                f"**{row.exchange} {row.trade_date} `{row.suite}` failed** {row.failed} of {row.evaluated} "
                f"expectations: {_failures_text(row.failures)}",
                icon=":material/error:",
            )
    table = latest.assign(
        result=latest["success"].map({True: "passed", False: "FAILED"}),
        failures=latest["failures"].map(_failures_text),
        data_docs=latest["docs_path"].map(quality_data.data_docs_link),
    )
    columns = ["exchange", "suite", "trade_date", "result", "evaluated", "failed", "rows_validated", "failures"]
    tables.show(
        table[[*columns, "validated_at", "data_docs"]],
        "validations",
        {
            "data_docs": st.column_config.LinkColumn("Data Docs", display_text="open"),
            "rows_validated": st.column_config.NumberColumn("rows", format="localized"),
            "failures": st.column_config.TextColumn("failed checks", width="large"),
        },
    )
    st.link_button("All Data Docs", quality_data.data_docs_link_root(), icon=":material/description:")
    with st.expander("Earlier validations (30 days)"):
        history = data.section(lambda: quality_data.validation_history(quality_data.since(30)))
        if history is not None:
            tables.show(history, "validation_history")


def _gaps() -> None:
    st.subheader("Gap ledger", anchor="gap-ledger")
    counts = data.section(quality_data.gap_counts)
    if counts is not None and not counts.empty:
        cols = st.columns(len(counts))
        for col, row in zip(cols, counts.itertuples(index=False), strict=True):
            col.metric(f"{row.status} gaps", f"{row.gaps:,}")
    statuses = st.multiselect(
        "Show gaps that are",
        list(quality_data.GAP_STATUSES),
        default=["open", "unfillable"],
        key="gap_statuses",
        help="open: not backfilled yet; unfillable: the exchange no longer has those ids; "
        "filled: backfilled; recorded: a feed disconnect interval",
    )
    if not statuses:
        st.caption("Choose at least one status.")
        return
    gaps = _rows(
        lambda: quality_data.gaps(tuple(statuses)),
        f"No {' or '.join(statuses)} gaps: no trade is known to be missing.",
        empty_is_good=True,
    )
    if gaps is None:
        return
    tables.show(gaps, "gaps", {"cause": st.column_config.TextColumn("cause", width="medium")})


def _corrections(days: int) -> None:
    st.subheader("Late-data corrections", anchor="corrections")
    since = quality_data.since(days)
    loads = _rows(lambda: quality_data.curated_loads(since), "No curated load in this period.")
    if loads is None:
        return
    changed = int(loads["changed"].sum())
    cols = st.columns(3)
    cols[0].metric("Curated loads", f"{len(loads):,}")
    cols[1].metric("Candles corrected", f"{changed:,}", help="Curated candles whose values differed from the live ones")
    cols[2].metric("Candles inserted", f"{int(loads['inserted'].sum()):,}", help="Candles the stream never wrote")
    tables.show(loads, "loads")
    fixes = data.section(lambda: quality_data.corrections(since))
    if fixes is not None and not fixes.empty:
        fixes = fixes.assign(
            change=[quality_data.describe_change(b, a) for b, a in zip(fixes["before"], fixes["after"], strict=True)]
        )
        tables.show(
            fixes[["loaded_at", "exchange", "symbol", "open_time", "was_state", "change"]],
            "corrections",
            {"change": st.column_config.TextColumn("what changed", width="large")},
        )


def _dead_letters(days: int) -> None:
    st.subheader("Dead letters by reason", anchor="dead-letters")
    letters = _rows(
        lambda: quality_data.dead_letters(quality_data.since(days)),
        "No dead letters in this period: every message became a trade.",
        empty_is_good=True,
    )
    if letters is None:
        return
    st.metric("Dead letters", f"{int(letters['dead_letters'].sum()):,}")
    tables.show(
        letters, "dead_letters", {"latest_example": st.column_config.TextColumn("latest example", width="large")}
    )


def _candle_states(days: int) -> None:
    st.subheader("Candle states", anchor="candle-states")
    st.caption(
        "live: still changing; closed: the stream's watermark passed it; curated: the nightly batch "
        "recomputed and validated it. Without trades: intervals the market was quiet."
    )
    states = _rows(lambda: quality_data.candle_states(quality_data.since(days)), "No candles in this period.")
    if states is None:
        return
    tables.show(states, "candle_states")
    matches = data.section(quality_data.reconciliations)
    if matches is not None and not matches.empty:
        st.caption("Curated candles against the exchange's own klines (latest check per market):")
        tables.show(
            matches, "reconciliations", {"match_rate": st.column_config.NumberColumn("match rate", format="percent")}
        )


def _coverage(days: int) -> None:
    st.subheader("Coverage", anchor="coverage")
    st.caption(
        "Per market and UTC day: the part of the day in which candlelake saw every trade of the market (a live "
        "feed connected, a replayed file's span, a REST backfill, the simulator), less trade-id gaps with known "
        "times; today counts the hours so far. Intervals: separate covered stretches. A candle that is not "
        "covered throughout is partial (hollow on the Markets page); time outside coverage is unknown, never "
        "quiet."
    )
    frame = _rows(
        lambda: quality_data.coverage_by_day(quality_data.since(days)),
        "No coverage is recorded in this period, and no candles. Coverage is written by whatever writes "
        "the trades: the producer's live feeds, `candlelake replay`, backfills and the simulator.",
    )
    if frame is None:
        return
    if not frame["intervals"].any():
        st.warning(
            "No coverage is recorded in this period: every candle below is partial, and no interval without "
            "trades can be told from missing data. Coverage is written by the producer's live feeds, "
            "`candlelake replay`, backfills and the simulator.",
            icon=":material/visibility_off:",
        )
    else:
        full = int((frame["covered_pct"] >= 100).sum())
        cols = st.columns(3)
        cols[0].metric("Market-days fully covered", f"{full:,} of {len(frame):,}")
        cols[1].metric("Hours covered", f"{frame['covered_hours'].sum():,.2f}")
        cols[2].metric(
            "Partial candles",
            f"{int(frame['partial_candles'].sum()):,}",
            help="Base candles not covered throughout: their values hold only the trades that were seen",
        )
    tables.show(
        frame,
        "coverage",
        {
            "covered_hours": st.column_config.NumberColumn("covered (h)", format="%.2f"),
            "covered_pct": st.column_config.ProgressColumn(
                "covered", format="%.1f%%", min_value=0, max_value=100, help="Share of the UTC day (today: so far)"
            ),
            "intervals": st.column_config.NumberColumn("intervals", help="Separate covered stretches of the day"),
            "kinds": st.column_config.TextColumn("kinds", help="live, replay, backfill, simulator"),
            "partial_candles": st.column_config.NumberColumn(
                "partial candles",
                format="localized",
                help="Base candles not covered throughout, judged against the coverage (hollow on the Markets page)",
            ),
            "curated_partial": st.column_config.NumberColumn(
                "curated partial",
                format="localized",
                help="Curated candles the nightly batch stored as partial; more than 'partial candles' means "
                "coverage recorded since (a backfill) awaits the next batch run over that day",
            ),
        },
    )


def main() -> None:
    st.title("Quality")
    url_params.warn_unknown("period", list(PERIODS), "period")
    _validations()
    _gaps()
    st.divider()
    period = st.segmented_control(
        "Period of the sections below",
        list(PERIODS),
        default=DEFAULT_PERIOD,
        required=True,
        key="period",
        bind="query-params",
    )
    days = PERIODS[period or DEFAULT_PERIOD]
    _corrections(days)
    _dead_letters(days)
    _candle_states(days)
    _coverage(days)


main()
