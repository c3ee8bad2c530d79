"""Alerts page: what the platform raised (anomalies of closed candles, crossed price rules) and the price
rules it evaluates. Redraws itself every few seconds; a new alert arrives as a toast as well.

Rules are added on the Markets page (or with `candlelake alerts add`) and removed here or there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from dashboard import alerts_data, data
from dashboard.formats import in_zone

REFRESH_SECONDS = 5
NEWEST_LINES = 5
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
TYPES = {"all": None, "anomalies": "anomaly", "price rules": "price"}


def _recent(window: str, kind: str, tz: str) -> None:
    since = (datetime.now(UTC) - WINDOWS[window]).replace(second=0, microsecond=0)
    raised = data.section(lambda: alerts_data.recent(since, kind=TYPES[kind], limit=500))
    if raised is None:
        return
    if raised.empty:
        st.info(
            f"No alert in the last {window}. The scorer raises one when a closed 1m candle is unusual (the "
            "z-score rules, the champion detector) or a price crosses a rule's level."
        )
        return
    announced: set[int] = st.session_state.setdefault("alerts_page_seen", set(raised["id"].tolist()))
    for row in raised.itertuples(index=False):
        if row.id not in announced:
            announced.add(row.id)
            st.toast(
                f"{row.exchange}:{row.symbol} {row.kind.replace('_', ' ')}", icon=":material/notifications_active:"
            )
    table = raised.assign(
        market=raised["exchange"] + ":" + raised["symbol"],
        raised=[in_zone(t, tz) for t in raised["raised_at"]],
        candle=[in_zone(t, tz) for t in raised["at"]],
        delay_s=[
            None if closed is None or closed != closed else round((r - closed).total_seconds(), 1)
            for r, closed in zip(raised["raised_at"], raised["candle_closed_at"], strict=True)
        ],
        value=[
            f"{p} (level {lv})" if t == "price" else f"score {s:.2f}"
            for t, p, lv, s in zip(raised["type"], raised["price"], raised["level"], raised["score"], strict=True)
        ],
    )
    st.metric(f"Alerts in the last {window}", f"{len(raised):,}")
    # The newest few as lines a person reads at a glance (and a screen reader reads at all).
    for row in table.head(NEWEST_LINES).itertuples(index=False):
        st.markdown(f"- **{row.market}** {row.kind.replace('_', ' ')} at {row.candle}: {row.value} ({row.detector})")
    st.dataframe(
        table[["id", "raised", "type", "market", "candle", "kind", "detector", "value", "delay_s", "webhook_status"]],
        hide_index=True,
        width="stretch",
        column_config={
            "delay_s": st.column_config.NumberColumn("delay (s)", help="From the candle's closing to the alert"),
            "webhook_status": st.column_config.TextColumn("webhook"),
        },
    )


def _rules() -> None:
    st.subheader("Price alert rules", anchor="rules")
    saved = data.section(alerts_data.rules)
    if saved is None:
        return
    if saved.empty:
        st.info(
            "No price alert rules. Add one on the Markets page, or with "
            "`candlelake alerts add binance:BTCUSDT above 100000`."
        )
        return
    for rule in saved.itertuples(index=False):
        text, button = st.columns([6, 1], vertical_alignment="center")
        text.write(
            f"**{rule.exchange}:{rule.symbol}** {rule.direction} {rule.level}"
            + (f" ({rule.note})" if rule.note else "")
            + f" · by {rule.created_by}"
        )
        if button.button("Remove", key=f"remove_rule_{rule.id}"):
            try:
                alerts_data.remove_rule(int(rule.id))
            except (ValueError, data.DataError) as exc:
                st.error(str(exc))
            st.rerun()


def main() -> None:
    st.title("Alerts")
    tz = st.session_state.get("tz", "UTC")
    left, right = st.columns(2)
    window = left.segmented_control(
        "Raised in the last", list(WINDOWS), default="24h", required=True, key="alerts_window"
    )
    kind = right.segmented_control("Show", list(TYPES), default="all", required=True, key="alerts_type")
    st.fragment(_recent, run_every=REFRESH_SECONDS)(window or "24h", kind or "all", tz)
    _rules()


main()
