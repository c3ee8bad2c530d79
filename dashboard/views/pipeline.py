"""Pipeline page: is the platform running? Each part's health as the platform_health DAG and the stream
supervisor last saw it, the producers' counters, and the streaming queries' lag, last batch and
throughput. Redraws itself every few seconds while "Live" is on.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from dashboard import data, pipeline_data, tables
from dashboard.formats import age_seconds, describe_age

REFRESH_SECONDS = 10
BADGES = {
    "healthy": "green",
    "reporting": "green",
    "stopped": "gray",
    "not reporting": "gray",
    "stuck": "orange",
    "dead": "red",
    "down": "red",
}


def _badge(state: str) -> str:
    return f":{BADGES.get(state, 'gray')}-badge[{state}]"


# A check older than three of its intervals means its DAG is not running: its verdict is stale.
STALE_AFTER_S = {"platform_health": 15 * 60, "stream_supervisor": 6 * 60}


def _components(now: datetime) -> pd.DataFrame | None:
    st.subheader("Components", anchor="components")
    health = data.section(pipeline_data.health_checks)
    supervisor = data.section(pipeline_data.supervisor_checks)
    if health is None or supervisor is None:
        return supervisor
    if health.empty and supervisor.empty:
        st.info(
            "No health check in the last day. The `platform_health` DAG checks every part every 5 minutes and "
            "`stream_supervisor` every 2: are Airflow's scheduler and these DAGs running (unpaused)?"
        )
        return supervisor
    rows = []
    for r in health.itertuples(index=False):
        rows.append(("platform_health", r.component, "healthy" if r.healthy else "down", r.detail, r.checked_at))
    for r in supervisor.itertuples(index=False):
        action = "" if r.action == "none" else f" ({r.action.replace('_', ' ')})"
        rows.append(("stream_supervisor", r.component, r.state, r.detail + action, r.checked_at))
    # One card per part: the newer of the two checks that looked at it.
    newest: dict[str, tuple[str, str, str, str, object]] = {}
    for row in sorted(rows, key=lambda r: pd.Timestamp(r[4])):
        newest[row[1]] = row
    cols = st.columns(min(len(newest), 6))
    for i, (source, component, state, detail, checked_at) in enumerate(newest.values()):
        age = age_seconds(checked_at, now)
        stale = age is not None and age > STALE_AFTER_S[source]
        with cols[i % len(cols)].container(border=True):
            st.markdown(f"**{component}** {_badge(state)}" + (" :gray-badge[stale]" if stale else ""), help=detail)
            st.caption(f"{source}, {describe_age(age)}")
    table = pd.DataFrame(rows, columns=["checked by", "component", "state", "detail", "checked_at"])
    with st.expander("Every part's latest check by each DAG"):
        tables.show(table, "checks", {"detail": st.column_config.TextColumn("detail", width="large")})
    return supervisor


def _producers(now: datetime) -> None:
    st.subheader("Producers", anchor="producers")
    producers = data.section(pipeline_data.producers)
    if producers is None:
        return
    if producers.empty:
        st.info("No producer has reported yet: start one with `candlelake produce` or `candlelake up`.")
        return
    for r in producers.itertuples(index=False):
        heartbeat = age_seconds(r.heartbeat_at, now)
        uptime = (pd.Timestamp(r.heartbeat_at) - pd.Timestamp(r.started_at)).total_seconds()
        rate = r.produced / uptime if uptime > 0 else 0.0
        with st.container(border=True):
            # A running producer reports every few seconds; the supervisor calls a minute of silence stuck.
            state = _badge("reporting") if heartbeat is not None and heartbeat <= 60 else _badge("not reporting")
            st.markdown(f"**{r.producer}** {state} ({r.source}, pid {r.pid}), last heartbeat {describe_age(heartbeat)}")
            cols = st.columns(6)
            cols[0].metric("Produced", f"{r.produced:,}", help="Trades sent to Kafka and acknowledged")
            cols[1].metric("Throughput", f"{rate:,.1f}/s", help="Produced trades per second since the producer started")
            cols[2].metric("Rejected", f"{r.rejected:,}", help="Sent to the dead-letter topic with a reason")
            cols[3].metric("Duplicates", f"{r.duplicates:,}")
            cols[4].metric(
                "Gaps", f"{r.gaps:,}", help=f"{r.missing_ids:,} trade ids missing, {r.backfilled:,} backfilled"
            )
            cols[5].metric("Reconnects", f"{r.reconnects:,}")


def _stream(now: datetime, supervisor: pd.DataFrame | None) -> None:
    st.subheader("Streaming queries", anchor="streaming")
    batches = data.section(pipeline_data.latest_batches)
    if batches is None:
        return
    if batches.empty:
        st.info("The streaming job has not reported a batch in the last day: is it running? (`candlelake up`)")
        return
    lags = pipeline_data.query_lags(supervisor) if supervisor is not None else {}
    checked = supervisor[supervisor["component"] == "stream"] if supervisor is not None else pd.DataFrame()
    checked_age = describe_age(age_seconds(checked.iloc[0]["checked_at"], now)) if not checked.empty else "never"
    for r in batches.itertuples(index=False):
        lag = lags.get(r.query_name, {}).get("lag")
        with st.container(border=True):
            st.markdown(f"**{r.query_name}**")
            cols = st.columns(5)
            idle = r.batch_id < 0
            cols[0].metric(
                "Last batch",
                describe_age(age_seconds(r.recorded_at, now)),
                "idle since start" if idle else f"batch {r.batch_id:,}",
                delta_color="off",
                delta_arrow="off",
            )
            cols[1].metric(
                "Lag",
                "unknown" if lag is None else f"{lag:,} records",
                f"supervisor, {checked_age}",
                delta_color="off",
                delta_arrow="off",
                help="Records between the query's last batch and the end of the Kafka topic",
            )
            cols[2].metric("Input", f"{(r.input_rows_per_second or 0):,.1f} rows/s")
            cols[3].metric("Processed", f"{(r.processed_rows_per_second or 0):,.1f} rows/s")
            cols[4].metric("Batch took", "-" if r.duration_ms is None else f"{r.duration_ms:,} ms")
            if r.watermark is not None and not pd.isna(r.watermark):
                st.caption(f"Watermark {pd.Timestamp(r.watermark):%Y-%m-%d %H:%M:%S} UTC")
    per_minute = data.section(pipeline_data.throughput)
    if per_minute is not None and not per_minute.empty:
        chart = per_minute.pivot_table(index="minute", columns="query_name", values="rows", aggfunc="sum")
        # Every minute of the hour on the axis: a minute without batches is zero, not a line across it.
        minutes = pd.date_range(chart.index.min(), chart.index.max(), freq="1min")
        chart = chart.reindex(minutes).fillna(0)
        st.caption("Rows per minute over the last hour (UTC)")
        st.line_chart(chart, height=220)


def _show() -> None:
    now = datetime.now(UTC)
    supervisor = _components(now)
    _producers(now)
    _stream(now, supervisor)
    st.caption(f"Refreshed {now:%H:%M:%S} UTC.")


def main() -> None:
    st.title("Pipeline")
    live = st.toggle("Live", value=True, key="pipeline_live", help=f"Redraw every {REFRESH_SECONDS} s")
    st.fragment(_show, run_every=REFRESH_SECONDS if live else None)()


main()
