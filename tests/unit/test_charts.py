"""Figure builders and the HTML report, on tiny in-memory frames (no lake)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from stockpipe.charts import (
    PALETTE,
    build_report,
    candlestick_figure,
    correlation_figure,
    performance_figure,
    quarantine_figure,
    returns_figure,
    stream_metrics_figure,
    stream_windows_figure,
    symbol_colors,
    volatility_figure,
)
from stockpipe.errors import MissingColumnsError, ParameterError, UnknownNameError

SYMBOLS = ("AAPL", "MSFT", "NVDA")


def make_bars(
    symbols=SYMBOLS, n: int = 80, seed: int = 7, start: str = "2024-01-01"
) -> pd.DataFrame:
    """Processed bars as the Spark job writes them; MSFT has no adj_close."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, sym in enumerate(symbols):
        ts = pd.date_range(start, periods=n, freq="D", tz="UTC")
        close = 50.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        df = pd.DataFrame({"symbol": sym, "interval": "1d", "ts": ts, "close": close})
        df["open"] = close * (1 + rng.normal(0, 0.005, n))
        df["high"] = np.maximum(df["open"], close) * 1.01
        df["low"] = np.minimum(df["open"], close) * 0.99
        df["adj_close"] = np.nan if sym == "MSFT" else close * 0.97
        df["volume"] = pd.array(rng.integers(1_000, 9_000, n), dtype="Int64")
        df["source"] = "samples"
        df["ingested_at"] = pd.Timestamp("2024-06-01", tz="UTC")
        df["batch_id"] = "b-1"
        df["return"] = df["close"].pct_change()
        df["log_return"] = np.log(df["close"]).diff()
        df["sma_20"] = df["close"].rolling(20).mean()
        df["sma_50"] = df["close"].rolling(50).mean()
        df["volatility_20"] = df["return"].rolling(20).std()
        df["range_pct"] = (df["high"] - df["low"]) / df["close"] * 100
        df["year"] = 2024
        frames.append(df)
    # shuffled: builders must not rely on the reader's row order
    return pd.concat(frames, ignore_index=True).sample(frac=1, random_state=1)


def make_windows(symbols=("AAPL", "MSFT"), n: int = 12) -> pd.DataFrame:
    rows = []
    t0 = pd.Timestamp("2024-06-03 14:00", tz="UTC")
    for i, sym in enumerate(symbols):
        for k in range(n):
            start = t0 + pd.Timedelta(seconds=10 * k)
            price = 100.0 * (i + 1) + k
            rows.append(
                {
                    "symbol": sym,
                    "window_start": start,
                    "window_end": start + pd.Timedelta(minutes=1),
                    "open": price,
                    "high": price + 1,
                    "low": price - 1,
                    "close": price + 0.5,
                    "vwap": price + 0.25,
                    "volume": 100 + k,
                    "trades": 5,
                    "price_std": 0.3,
                }
            )
    return pd.DataFrame(rows)


def make_metrics(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query_name": "tick_windows",
            "batch_id": range(n),
            "timestamp": pd.date_range("2024-06-03 14:00", periods=n, freq="10s", tz="UTC"),
            "num_input_rows": 100,
            "input_rows_per_second": [10.0 * (k + 1) for k in range(n)],
            "processed_rows_per_second": [12.0 * (k + 1) for k in range(n)],
            "batch_duration_ms": [500 + 10 * k for k in range(n)],
            "watermark": pd.NaT,
            "state_rows": pd.array([None] * n, dtype="Int64"),
            "late_rows_dropped": pd.array([None] * n, dtype="Int64"),
        }
    )


QUARANTINE = pd.DataFrame(
    {
        "reason": [
            "close is null",
            "high < low; volume < 0",
            "high < low",
            "bad json",
            "volume < 0;high < low",
            "close is null",
        ],
        "source": ["yahoo", "csv", "csv", None, "yahoo", "yahoo"],
        "topic": ["stock.bars"] * 3 + ["stock.ticks"] + ["stock.bars"] * 2,
        "quarantined_at": pd.Timestamp("2024-06-01", tz="UTC"),
    }
)


def axis_title(fig: go.Figure, axis: str) -> str:
    return fig.layout[axis].title.text or ""


def assert_empty_state(fig: go.Figure, *needles: str) -> None:
    assert len(fig.data) == 0
    assert fig.layout.title.text
    texts = [a.text for a in fig.layout.annotations]
    assert len(texts) == 1 and texts[0].startswith("No ")
    for needle in needles:
        assert needle in texts[0]


# --- colours -------------------------------------------------------------------------------


def test_symbol_colours_are_stable_distinct_and_keep_fixed_entries():
    a = symbol_colors(["NVDA", "AAPL", "MSFT", "AMZN"])
    b = symbol_colors(["MSFT", "AMZN", "AAPL", "NVDA"])
    assert a == b
    assert len(set(a.values())) == 4 and set(a.values()) <= set(PALETTE)
    fixed = symbol_colors(["AAPL", "TSLA"], fixed={"AAPL": "#123456"})
    assert fixed["AAPL"] == "#123456" and fixed["TSLA"] != "#123456"


def test_one_mapping_colours_a_symbol_alike_in_every_figure():
    bars = make_bars()
    colors = symbol_colors([*SYMBOLS, "TSLA"])
    perf = performance_figure(bars, colors=colors)
    vol = volatility_figure(bars, colors=colors)
    vio = returns_figure(bars, colors=colors)
    win = stream_windows_figure(make_windows(), colors=colors)
    for sym in SYMBOLS:
        assert {t.line.color for t in (*perf.data, *vol.data, *vio.data) if t.name == sym} == {
            colors[sym]
        }
    assert next(t for t in win.data if t.name == "MSFT VWAP").line.color == colors["MSFT"]
    candle = candlestick_figure(bars, "NVDA", colors=colors)
    assert candle.data[-1].marker.color == colors["NVDA"]


# --- batch bars ----------------------------------------------------------------------------


def test_candlestick_has_candles_smas_and_volume_for_one_symbol():
    bars = make_bars()
    fig = candlestick_figure(bars, "aapl")
    assert [t.type for t in fig.data] == ["candlestick", "scatter", "scatter", "bar"]
    assert [t.name for t in fig.data] == ["AAPL OHLC", "SMA 20", "SMA 50", "AAPL volume"]
    expected = bars[bars["symbol"] == "AAPL"].sort_values("ts")
    np.testing.assert_allclose(fig.data[0].close, expected["close"])
    np.testing.assert_allclose(fig.data[2].y, expected["sma_50"])  # NaN where not defined
    assert fig.data[3].yaxis == "y2"  # volume in its own subplot
    assert "AAPL" in fig.layout.title.text
    assert axis_title(fig, "yaxis") == "Price (USD)"
    assert axis_title(fig, "yaxis2") == "Volume (shares)"
    assert axis_title(fig, "xaxis2") == "Date (UTC)"
    buttons = [b.label for b in fig.layout.xaxis.rangeselector.buttons]
    assert buttons == ["1m", "6m", "1y", "all"]
    assert fig.layout.xaxis.rangeslider.visible is False


def test_performance_starts_at_100_on_adj_close_else_close():
    bars = make_bars()
    fig = performance_figure(bars)
    assert [t.name for t in fig.data] == sorted(SYMBOLS)
    for trace in fig.data:
        rows = bars[bars["symbol"] == trace.name].sort_values("ts")
        price = rows["close"] if trace.name == "MSFT" else rows["adj_close"]
        expected = price.to_numpy() / price.iloc[0] * 100
        assert trace.y[0] == 100.0
        np.testing.assert_allclose(trace.y, expected, rtol=1e-12)
    assert "100" in axis_title(fig, "yaxis")


def test_performance_does_not_mix_adjusted_and_raw_prices_in_one_series():
    bars = make_bars(symbols=("AAPL",))
    bars.loc[bars["ts"] == bars["ts"].max(), "adj_close"] = np.nan  # one bar lacks adj_close
    trace = performance_figure(bars).data[0]
    rows = bars.sort_values("ts")
    np.testing.assert_allclose(trace.y, rows["close"] / rows["close"].iloc[0] * 100)


def test_volatility_is_plotted_in_percent_per_symbol():
    bars = make_bars()
    fig = volatility_figure(bars)
    assert [t.type for t in fig.data] == ["scatter"] * 3
    aapl = bars[bars["symbol"] == "AAPL"].sort_values("ts").dropna(subset=["volatility_20"])
    np.testing.assert_allclose(fig.data[0].y, aapl["volatility_20"] * 100)
    assert "(%)" in axis_title(fig, "yaxis")
    assert len(fig.layout.xaxis.rangeselector.buttons) == 4


@pytest.mark.parametrize(("kind", "trace_type"), [("violin", "violin"), ("histogram", "histogram")])
def test_returns_distribution_per_symbol_in_percent(kind, trace_type):
    bars = make_bars()
    fig = returns_figure(bars, kind=kind)
    assert [t.type for t in fig.data] == [trace_type] * 3
    nvda = bars[bars["symbol"] == "NVDA"].sort_values("ts")["return"].dropna() * 100
    values = fig.data[2].y if kind == "violin" else fig.data[2].x
    np.testing.assert_allclose(values, nvda)
    label_axis = "yaxis" if kind == "violin" else "xaxis"
    assert axis_title(fig, label_axis) == "Daily return (%)"
    other = "xaxis" if kind == "violin" else "yaxis"
    assert axis_title(fig, other)


def test_returns_kind_must_be_known():
    with pytest.raises(UnknownNameError, match="histogram, violin"):
        returns_figure(make_bars(), kind="pie")


def test_correlation_equals_pandas_corr_of_daily_returns():
    bars = make_bars()
    wide = bars.pivot(index="ts", columns="symbol", values="close").sort_index()
    expected = wide.pct_change().corr()
    fig = correlation_figure(bars)
    (heat,) = fig.data
    assert heat.type == "heatmap"
    assert list(heat.x) == list(heat.y) == list(expected.columns)
    np.testing.assert_allclose(np.array(heat.z, dtype=float), expected.to_numpy(), rtol=1e-12)
    assert (heat.zmin, heat.zmax) == (-1, 1)
    assert heat.texttemplate  # values are written in the cells
    first, last = heat.colorscale[0][1], heat.colorscale[-1][1]
    assert first != last  # diverging: distinct ends
    assert fig.layout.title.text and axis_title(fig, "xaxis") and axis_title(fig, "yaxis")


def test_mixed_intervals_are_refused_with_a_clear_error():
    bars = make_bars(symbols=("AAPL",))
    bars.loc[bars.index[:3], "interval"] = "1h"
    with pytest.raises(ParameterError, match="parameter `bars`: 'rows of several intervals"):
        performance_figure(bars)


def test_missing_columns_are_named():
    with pytest.raises(MissingColumnsError, match="processed bars are missing columns: sma_50"):
        candlestick_figure(make_bars().drop(columns=["sma_50"]), "AAPL")


# --- streaming -----------------------------------------------------------------------------


def test_stream_windows_show_the_latest_windows_per_symbol():
    windows = make_windows(n=12)
    fig = stream_windows_figure(windows, last=5)
    assert [t.type for t in fig.data] == ["ohlc", "scatter", "ohlc", "scatter"]
    assert [t.name for t in fig.data] == ["AAPL OHLC", "AAPL VWAP", "MSFT OHLC", "MSFT VWAP"]
    aapl = windows[windows["symbol"] == "AAPL"].sort_values("window_end").tail(5)
    np.testing.assert_allclose(fig.data[1].y, aapl["vwap"])
    assert len(fig.data[0].x) == 5
    assert axis_title(fig, "yaxis") == axis_title(fig, "yaxis2") == "Price (USD)"
    assert axis_title(fig, "xaxis2") == "Window end (UTC)"
    assert "1 min windows" in fig.layout.title.subtitle.text


def test_stream_metrics_show_throughput_and_batch_duration():
    metrics = make_metrics()
    fig = stream_metrics_figure(metrics)
    assert [t.type for t in fig.data] == ["scatter", "scatter", "bar"]
    assert [t.name for t in fig.data] == ["input rows/s", "processed rows/s", "batch duration"]
    np.testing.assert_allclose(fig.data[0].y, metrics["input_rows_per_second"])
    np.testing.assert_allclose(fig.data[2].y, metrics["batch_duration_ms"])
    assert axis_title(fig, "yaxis") == "Throughput (rows/s)"
    assert axis_title(fig, "yaxis2") == "Batch duration (ms)"
    two = pd.concat([metrics, metrics.assign(query_name="raw_ticks")])
    assert len(stream_metrics_figure(two).data) == 6  # three traces per query


# --- data quality --------------------------------------------------------------------------


def test_quarantine_counts_each_reason_of_a_multi_reason_row():
    expected = Counter(
        part.strip() for reasons in QUARANTINE["reason"] for part in reasons.split(";")
    )
    fig = quarantine_figure(QUARANTINE)
    counted: Counter[str] = Counter()
    for trace in fig.data:
        assert trace.type == "bar" and trace.orientation == "h"
        for reason, rows in zip(trace.y, trace.x, strict=True):
            counted[reason] += int(rows)
    assert counted == expected
    by_source = {t.name: dict(zip(t.y, t.x, strict=True)) for t in fig.data}
    assert by_source["csv"] == {"high < low": 2, "volume < 0": 1}
    assert by_source["(no source, stock.ticks)"] == {"bad json": 1}
    assert axis_title(fig, "xaxis") == "Quarantined rows (count)"
    assert axis_title(fig, "yaxis") == "Reason"


# --- small and empty input -----------------------------------------------------------------

BUILDERS = {
    "candlestick": lambda df: candlestick_figure(df, "AAPL"),
    "performance": performance_figure,
    "volatility": volatility_figure,
    "returns": returns_figure,
    "histogram": lambda df: returns_figure(df, kind="histogram"),
    "correlation": correlation_figure,
}


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("frame", ["typed", "no columns", "none"])
def test_empty_input_gives_an_empty_state_figure(name, frame):
    bars = {"typed": make_bars().iloc[:0], "no columns": pd.DataFrame(), "none": None}[frame]
    assert_empty_state(BUILDERS[name](bars))


@pytest.mark.parametrize(
    "build",
    [stream_windows_figure, stream_metrics_figure, quarantine_figure],
    ids=["windows", "metrics", "quarantine"],
)
def test_empty_streaming_and_quality_input_gives_an_empty_state(build):
    assert_empty_state(build(pd.DataFrame()))
    assert_empty_state(build(None))


def test_empty_state_names_the_symbol_and_the_range():
    fig = candlestick_figure(make_bars(), "TSLA", start="2024-01-01", end="2024-02-01")
    assert_empty_state(fig, "No processed bars for TSLA in 2024-01-01 … 2024-02-01")


def test_one_row_draws_what_it_can_and_explains_the_rest():
    one = make_bars(symbols=("AAPL",), n=1)
    assert len(candlestick_figure(one, "AAPL").data) == 4
    (perf,) = performance_figure(one).data
    assert list(perf.y) == [100.0]
    # one bar has no return and no 20-bar volatility: an empty state, not a crash
    for build in (volatility_figure, returns_figure, correlation_figure):
        assert_empty_state(build(one))
    windows = make_windows(symbols=("AAPL",), n=1)
    assert len(stream_windows_figure(windows).data) == 2
    assert len(stream_metrics_figure(make_metrics(n=1)).data) == 3
    assert len(quarantine_figure(QUARANTINE.iloc[:1]).data) == 1


def test_one_symbol_correlates_with_itself():
    (heat,) = correlation_figure(make_bars(symbols=("AAPL",))).data
    assert np.array(heat.z, dtype=float).tolist() == [[1.0]]


def test_every_figure_has_a_title_and_unit_labelled_axes():
    bars = make_bars()
    figs = [
        candlestick_figure(bars, "AAPL"),
        performance_figure(bars),
        volatility_figure(bars),
        returns_figure(bars),
        returns_figure(bars, kind="histogram"),
        correlation_figure(bars),
        stream_windows_figure(make_windows()),
        stream_metrics_figure(make_metrics()),
        quarantine_figure(QUARANTINE),
    ]
    units = re.compile(r"\((USD|%|rows/s|ms|count|shares|UTC|start = 100)\)")
    for fig in figs:
        assert fig.layout.title.text
        layout = fig.to_plotly_json()["layout"]
        yaxes = [k for k in layout if k.startswith("yaxis")]
        assert yaxes and all(axis_title(fig, k) for k in yaxes), fig.layout.title.text
        xtitles = [axis_title(fig, k) for k in layout if k.startswith("xaxis")]
        assert any(xtitles), fig.layout.title.text
        if fig.data[0].type != "heatmap":
            labels = [axis_title(fig, k) for k in yaxes] + [t for t in xtitles if t]
            assert any(units.search(label) for label in labels), labels


# --- report --------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _report() -> tuple[str, int]:
    bars = make_bars()
    sections = [
        ("Prices", [candlestick_figure(bars, "AAPL"), candlestick_figure(bars, "MSFT")]),
        ("Performance", performance_figure(bars)),
        ("Quality <check>", [quarantine_figure(QUARANTINE), quarantine_figure(None)]),
    ]
    html = build_report(
        sections,
        "Daily <report>",
        "AAPL & MSFT",
        generated_at=datetime(2024, 6, 1, 12, 30, tzinfo=UTC),
    )
    return html, 5


def test_report_embeds_plotly_js_once_and_loads_nothing_from_the_network():
    html, _ = _report()
    bundle = get_plotlyjs()
    assert html.count(bundle) == 1
    assert html.count("plotly.js v") == 1  # the bundle's own banner, not a second copy
    rest = html.replace(bundle, "", 1)
    assert "cdn.plot.ly" not in rest
    parser = _Tags()
    parser.feed(rest)
    for tag, attrs in parser.tags:
        for attr in ("src", "href"):
            value = attrs.get(attr) or ""
            assert not value.startswith(("http:", "https:", "//")), (tag, attrs)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all("src" not in attrs for attrs in scripts)


def test_report_has_heading_contents_and_one_div_per_figure():
    html, n = _report()
    assert html.startswith("<!DOCTYPE html>")
    assert "<h1>Daily &lt;report&gt;</h1>" in html
    assert "AAPL &amp; MSFT" in html
    assert "Generated 2024-06-01 12:30 UTC" in html
    divs = re.findall(r'<div id="(figure-\d+)" class="plotly-graph-div"', html)
    assert divs == [f"figure-{i}" for i in range(1, n + 1)]
    assert html.count("Plotly.newPlot(") == n
    for i in range(1, 4):
        assert f'href="#section-{i}"' in html and f'<section id="section-{i}">' in html
    for i in range(1, n + 1):
        assert f'href="#figure-{i}"' in html
    assert "Quality &lt;check&gt;" in html


def test_report_without_figures_skips_the_bundle_and_rejects_non_figures():
    html = build_report([("Nothing yet", [])], "Empty")
    assert "No figures in this section." in html and get_plotlyjs()[:200] not in html
    with pytest.raises(ParameterError, match=r"`sections\['Broken'\]`: 'not a figure' is not"):
        build_report([("Broken", ["not a figure"])], "x")
