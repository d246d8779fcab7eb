"""The market report: read the lake, build the figures, write one HTML file.

``notebooks/charts.ipynb`` is a thin shell over :func:`market_report` and
:func:`write_report`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from stockpipe import charts
from stockpipe.config import Settings
from stockpipe.lake import filesystem, zone
from stockpipe.reader import (
    read_bars,
    read_quarantine,
    read_stream_metrics,
    read_tick_windows,
)


@dataclass
class Report:
    html: str
    sections: list[tuple[str, go.Figure | list[go.Figure]]]
    bars: pd.DataFrame
    windows: pd.DataFrame

    @property
    def figure_count(self) -> int:
        return sum(len(f) if isinstance(f, list) else 1 for _, f in self.sections)


def _quarantine_all(settings: Settings) -> pd.DataFrame:
    frames = []
    for kind in ("bars", "ticks"):
        q = read_quarantine(settings, kind)
        if len(q):
            q = q.copy()
            if "source" not in q:
                q["source"] = None
            if "quarantined_at" not in q:
                q["quarantined_at"] = q.get("kafka_timestamp")
            frames.append(q.loc[:, ["reason", "source", "topic", "quarantined_at"]])
    if not frames:
        return pd.DataFrame(columns=["reason", "source", "topic", "quarantined_at"])
    return pd.concat(frames, ignore_index=True)


def market_report(
    settings: Settings,
    symbols: list[str] | str | None = None,
    start: str | None = None,
    end: str | None = None,
    *,
    interval: str = "1d",
) -> Report:
    """Read the lake and build every chart of the report."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bars = read_bars(settings, symbols, start or None, end or None, interval)
    notes = [str(w.message) for w in caught]
    present = sorted(bars["symbol"].unique()) if len(bars) else []
    colors = charts.symbol_colors(present)
    candles = (
        [charts.candlestick_figure(bars, s, start=start, end=end, colors=colors) for s in present]
        if present
        else [charts.empty_figure("Prices", f"No processed bars for {symbols or 'any symbol'}")]
    )
    windows = read_tick_windows(settings)
    latest = windows
    if len(windows):
        cutoff = windows["window_start"].max() - pd.Timedelta(minutes=30)
        latest = windows[windows["window_start"] >= cutoff]
    metrics = read_stream_metrics(settings)
    sections: list[tuple[str, go.Figure | list[go.Figure]]] = [
        ("Prices, volume and moving averages", candles),
        (
            "Performance (start of range = 100)",
            charts.performance_figure(bars, start=start, end=end, colors=colors),
        ),
        (
            "Risk",
            [
                charts.volatility_figure(bars, start=start, end=end, colors=colors),
                charts.returns_figure(bars, start=start, end=end, colors=colors),
            ],
        ),
        ("Correlation of daily returns", charts.correlation_figure(bars, start=start, end=end)),
        (
            "Streaming",
            [
                charts.stream_windows_figure(latest, colors=colors),
                charts.stream_metrics_figure(metrics),
            ],
        ),
        ("Data quality", charts.quarantine_figure(_quarantine_all(settings))),
    ]
    span = f"{start or 'start'} … {end or 'latest'}"
    subtitle = f"{len(present)} symbol(s), {len(bars)} bars, {span}"
    if notes:
        subtitle += " — " + "; ".join(notes)
    html = charts.build_report(sections, "stockpipe market report", subtitle)
    return Report(html=html, sections=sections, bars=bars, windows=windows)


def write_report(
    settings: Settings, html: str, output_dir: str | Path = "reports", name: str | None = None
) -> tuple[str, Path]:
    """Write the report to ``s3://<bucket>/reports/<date>/`` and to ``output_dir``."""
    now = datetime.now(UTC)
    name = name or f"market-report-{now:%Y%m%dT%H%M%SZ}.html"
    local = Path(output_dir) / now.strftime("%Y-%m-%d") / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(html, encoding="utf-8")
    key = f"{zone(settings, 'reports')}/{now:%Y-%m-%d}/{name}"
    filesystem(settings).pipe(key, html.encode("utf-8"))
    return f"s3://{key}", local
