// Keeps a chart's zoom and pan across the live fragment's redraws.
//
// Streamlit replaces a Plotly chart whose figure changed with a new one (its element id hashes the
// figure), so Plotly's own `uirevision` cannot carry the user's view over. This script remembers the axis
// ranges the user set, per `layout.uirevision` (the dashboard sets it to the view: market, range,
// bucket, time zone), and applies them to every new chart of the same view. Double-clicking the chart
// (autorange) forgets them; another view starts from its own full range.
(function () {
  if (window.candlelakeKeepZoom) return;
  window.candlelakeKeepZoom = true;
  const saved = new Map();
  const RANGE = /^[xy]axis\d*\.range(\[[01]\])?$/;
  const AUTO = /^[xy]axis\d*\.autorange$/;

  function attach(plot) {
    if (plot.candlelakeKeepZoom || !plot.layout || typeof plot.on !== "function") return;
    plot.candlelakeKeepZoom = true;
    const view = plot.layout.uirevision;
    if (view && saved.has(view) && window.Plotly) window.Plotly.relayout(plot, saved.get(view));
    plot.on("plotly_relayout", (change) => {
      const current = plot.layout && plot.layout.uirevision;
      if (!current) return;
      if (Object.keys(change).some((key) => AUTO.test(key))) {
        saved.delete(current);
        return;
      }
      const ranges = Object.fromEntries(Object.entries(change).filter(([key]) => RANGE.test(key)));
      if (Object.keys(ranges).length) saved.set(current, { ...(saved.get(current) || {}), ...ranges });
    });
  }

  const scan = () => document.querySelectorAll(".js-plotly-plot").forEach(attach);
  new MutationObserver(scan).observe(document.body, { childList: true, subtree: true });
  scan();
})();
