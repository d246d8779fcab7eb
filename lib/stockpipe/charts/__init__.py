"""Charts: figure builders (DataFrames in, plotly Figures out) and the HTML report."""

from stockpipe.charts.figures import (
    PALETTE,
    candlestick_figure,
    correlation_figure,
    empty_figure,
    performance_figure,
    quarantine_counts,
    quarantine_figure,
    return_matrix,
    returns_figure,
    stream_metrics_figure,
    stream_windows_figure,
    symbol_colors,
    volatility_figure,
)
from stockpipe.charts.report import build_report

__all__ = [
    "PALETTE",
    "build_report",
    "candlestick_figure",
    "correlation_figure",
    "empty_figure",
    "performance_figure",
    "quarantine_counts",
    "quarantine_figure",
    "return_matrix",
    "returns_figure",
    "stream_metrics_figure",
    "stream_windows_figure",
    "symbol_colors",
    "volatility_figure",
]
