"""Figure builders: pandas frames in, ``plotly.graph_objects.Figure`` out.

Every builder is pure (no lake, no I/O) so it is unit-testable with tiny frames.
Each returns a titled figure with unit-labelled axes; empty input gives an
empty-state figure (no traces, one annotation saying what is missing) instead of
a crash, because a report must still render when a symbol or a day has no data.
Symbol colours come from one mapping (``symbol_colors``); pass the same mapping
to every builder of a report so a symbol keeps its colour across figures.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from stockpipe.errors import ParameterError, UnknownNameError
from stockpipe.schemas import SOURCES, require_columns

DateLike = str | date | datetime | pd.Timestamp

#: Colour-blind-friendly, readable on white (Okabe-Ito first, then darker extras).
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#7F3C8D",
    "#8C564B",
    "#999933",
    "#332288",
)
UP_COLOR = "#26A69A"
DOWN_COLOR = "#EF5350"
SMA_STYLES: tuple[tuple[str, str, str, str], ...] = (
    ("sma_20", "SMA 20", "#1F3A93", "solid"),
    ("sma_50", "SMA 50", "#B8860B", "dash"),
)
#: Stream metrics are not symbols: neutral colours keep them apart from the symbol palette.
METRIC_COLORS: tuple[str, str, str] = ("#4D4D4D", "#1F3A93", "#8E9AAF")
TEMPLATE = "plotly_white"
RANGE_BUTTONS: tuple[dict[str, object], ...] = (
    {"count": 1, "label": "1m", "step": "month", "stepmode": "backward"},
    {"count": 6, "label": "6m", "step": "month", "stepmode": "backward"},
    {"count": 1, "label": "1y", "step": "year", "stepmode": "backward"},
    {"label": "all", "step": "all"},
)
RETURN_KINDS: tuple[str, ...] = ("violin", "histogram")

_BAR_BASE = ("symbol", "ts")
_WINDOW_COLS = ("symbol", "window_start", "window_end", "open", "high", "low", "close", "vwap")
_METRIC_COLS = (
    "timestamp",
    "input_rows_per_second",
    "processed_rows_per_second",
    "batch_duration_ms",
)


# --- colours -------------------------------------------------------------------------------


def symbol_colors(
    symbols: Iterable[str],
    *,
    fixed: Mapping[str, str] | None = None,
    palette: Sequence[str] = PALETTE,
) -> dict[str, str]:
    """One colour per symbol, stable across runs and figures.

    A symbol's home colour comes from a hash of its name (not from its position in
    a list), so adding a symbol rarely recolours the others; clashes move to the
    next free colour, in sorted symbol order. ``fixed`` entries are kept as given.
    """
    out = dict(fixed or {})
    taken = set(out.values())
    for sym in sorted({str(s) for s in symbols} - set(out)):
        home = zlib.crc32(sym.encode()) % len(palette)
        ring = [palette[(home + i) % len(palette)] for i in range(len(palette))]
        colour = next((c for c in ring if c not in taken), palette[home])
        out[sym] = colour
        taken.add(colour)
    return out


# --- shared helpers ------------------------------------------------------------------------


def _fmt_when(value: DateLike) -> str:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    if (ts.hour, ts.minute, ts.second) == (0, 0, 0):
        return ts.strftime("%Y-%m-%d")
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _period(start: DateLike | None, end: DateLike | None) -> str:
    if start is None and end is None:
        return ""
    left = _fmt_when(start) if start is not None else "…"
    right = _fmt_when(end) if end is not None else "now"
    return f"{left} … {right}"


def _no_data(
    what: str, symbols: Sequence[str] | None, start: DateLike | None, end: DateLike | None
) -> str:
    msg = f"No {what}"
    if symbols:
        msg += f" for {', '.join(symbols)}"
    period = _period(start, end)
    return f"{msg} in {period}" if period else msg


def _utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC: plotly.js ignores offsets, so the axis says "(UTC)"."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _style(fig: go.Figure, title: str, subtitle: str = "", height: int = 480) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title={
            "text": title,
            "subtitle": {"text": subtitle},
            "x": 0.01,
            "xanchor": "left",
            "y": 0.98,
            "yref": "container",
            "yanchor": "top",
        },
        height=height,
        margin={"l": 70, "r": 30, "t": 110, "b": 60},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
        hovermode="x unified",
    )
    return fig


def empty_figure(title: str, message: str, height: int = 320) -> go.Figure:
    """A figure with no traces and one centred message, so a report still renders."""
    fig = go.Figure()
    _style(fig, title, height=height)
    fig.update_layout(hovermode=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=message,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 16, "color": "#555"},
    )
    return fig


def _prepare_bars(
    bars: pd.DataFrame | None, symbols: Sequence[str] | None, columns: Iterable[str]
) -> tuple[pd.DataFrame, str | None]:
    """Filter, de-duplicate and sort bars; reject a mix of intervals (it would mix scales)."""
    if bars is None or bars.empty:
        return pd.DataFrame(columns=[*_BAR_BASE, *columns]), None
    require_columns(bars, [*_BAR_BASE, *columns], "processed bars")
    df = bars
    if symbols:
        df = df[df["symbol"].isin([s.upper() for s in symbols])]
    interval = None
    if "interval" in df.columns:
        found = sorted(df["interval"].dropna().unique())
        if len(found) > 1:
            raise ParameterError(
                "bars",
                f"rows of several intervals ({', '.join(found)})",
                "one interval's rows",
                use="bars of one interval, e.g. bars[bars.interval == '1d']",
            )
        interval = found[0] if found else None
    df = (
        df.drop_duplicates(["symbol", "ts"], keep="last")
        .sort_values(["symbol", "ts"])
        .reset_index(drop=True)
    )
    df = df.assign(ts=_utc_naive(df["ts"]))
    return df, interval


def _symbols_in(df: pd.DataFrame, requested: Sequence[str] | None) -> list[str]:
    present = set(df["symbol"])
    if requested:
        return [s.upper() for s in requested if s.upper() in present]
    return sorted(present)


def _time_label(interval: str | None) -> str:
    return "Date (UTC)" if interval in (None, "1d") else "Time (UTC)"


def _return_label(interval: str | None) -> str:
    return "Daily return (%)" if interval in (None, "1d") else f"Return per {interval} bar (%)"


def _fmt_duration(td: pd.Timedelta) -> str:
    seconds = td.total_seconds()
    for unit, size in (("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def _span(ts: pd.Series) -> str:
    return _period(ts.min(), ts.max())


def _add_range_selector(fig: go.Figure) -> None:
    fig.update_layout(
        xaxis={
            "rangeselector": {
                "buttons": list(RANGE_BUTTONS),
                "x": 0,
                "xanchor": "left",
                "y": 1.02,
                "yanchor": "bottom",
            }
        }
    )


def _price_basis(group: pd.DataFrame) -> tuple[pd.Series, str]:
    """adj_close when the symbol has it on every row, else close.

    Chosen per symbol, not per row: mixing adjusted and raw prices in one series
    would show dividends and splits as jumps.
    """
    if "adj_close" in group.columns and group["adj_close"].notna().all():
        return group["adj_close"].astype("float64"), "adj close"
    return group["close"].astype("float64"), "close"


# --- batch bars ----------------------------------------------------------------------------


def candlestick_figure(
    bars: pd.DataFrame | None,
    symbol: str,
    *,
    start: DateLike | None = None,
    end: DateLike | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Candles with SMA 20/50 overlays and a volume subplot for one symbol."""
    sym = symbol.upper()
    cols = ("open", "high", "low", "close", "volume", "sma_20", "sma_50")
    df, interval = _prepare_bars(bars, [sym], cols)
    title = f"{sym}: price, SMA 20/50 and volume"
    if df.empty:
        return empty_figure(title, _no_data("processed bars", [sym], start, end))
    colour = symbol_colors([sym], fixed=colors)[sym]
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04
    )
    fig.add_trace(
        go.Candlestick(
            x=df["ts"],
            open=df["open"],
            high=df["high"],
            low=df["low"],
            close=df["close"],
            name=f"{sym} OHLC",
            increasing={"line": {"color": UP_COLOR}, "fillcolor": UP_COLOR},
            decreasing={"line": {"color": DOWN_COLOR}, "fillcolor": DOWN_COLOR},
        ),
        row=1,
        col=1,
    )
    for col, label, line_colour, dash in SMA_STYLES:
        fig.add_trace(
            go.Scatter(
                x=df["ts"],
                y=df[col].astype("float64"),
                name=label,
                mode="lines",
                line={"color": line_colour, "width": 1.5, "dash": dash},
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Bar(
            x=df["ts"],
            y=pd.to_numeric(df["volume"], errors="coerce").astype("float64"),
            name=f"{sym} volume",
            marker={"color": colour},
            opacity=0.7,
        ),
        row=2,
        col=1,
    )
    subtitle = f"{interval or 'unknown'} bars, {_span(df['ts'])}"
    _style(fig, title, subtitle, height=620)
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_xaxes(title_text=_time_label(interval), row=2, col=1)
    fig.update_yaxes(title_text="Price (USD)", row=1, col=1)
    fig.update_yaxes(title_text="Volume (shares)", row=2, col=1)
    _add_range_selector(fig)
    return fig


def performance_figure(
    bars: pd.DataFrame | None,
    *,
    symbols: Sequence[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Every symbol indexed to 100 at its first bar, so different price levels compare."""
    df, interval = _prepare_bars(bars, symbols, ("close", "adj_close"))
    title = "Performance (indexed to 100 at the start of the range)"
    order = _symbols_in(df, symbols) if not df.empty else []
    palette = symbol_colors(order, fixed=colors)
    fig = go.Figure()
    for sym in order:
        group = df[df["symbol"] == sym]
        price, basis = _price_basis(group)
        valid = price.notna() & (price != 0)
        if not valid.any():
            continue
        first = price[valid].iloc[0]
        fig.add_trace(
            go.Scatter(
                x=group["ts"][valid],
                y=price[valid] / first * 100,
                name=sym,
                mode="lines+markers" if valid.sum() == 1 else "lines",
                line={"color": palette[sym], "width": 2},
                hovertemplate=f"{sym} ({basis}): %{{y:.2f}}<extra></extra>",
            )
        )
    if not fig.data:
        return empty_figure(title, _no_data("processed bars", symbols, start, end))
    _style(
        fig, title, f"{interval or 'unknown'} bars, adj close where available, {_span(df['ts'])}"
    )
    fig.add_hline(y=100, line={"color": "#888", "width": 1, "dash": "dot"})
    fig.update_xaxes(title_text=_time_label(interval))
    fig.update_yaxes(title_text="Indexed price (start = 100)")
    _add_range_selector(fig)
    return fig


def volatility_figure(
    bars: pd.DataFrame | None,
    *,
    symbols: Sequence[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Rolling 20-bar volatility (standard deviation of returns) per symbol, in %."""
    df, interval = _prepare_bars(bars, symbols, ("volatility_20",))
    title = "Rolling volatility (20 bars)"
    order = _symbols_in(df, symbols) if not df.empty else []
    palette = symbol_colors(order, fixed=colors)
    fig = go.Figure()
    for sym in order:
        group = df[(df["symbol"] == sym) & df["volatility_20"].notna()]
        if group.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=group["ts"],
                y=group["volatility_20"].astype("float64") * 100,
                name=sym,
                mode="lines+markers" if len(group) == 1 else "lines",
                line={"color": palette[sym], "width": 2},
            )
        )
    if not fig.data:
        return empty_figure(title, _no_data("20-bar volatility values", symbols, start, end))
    _style(fig, title, f"{interval or 'unknown'} bars, {_span(df['ts'])}")
    fig.update_xaxes(title_text=_time_label(interval))
    fig.update_yaxes(title_text="Volatility, std of returns (%)", ticksuffix="%")
    _add_range_selector(fig)
    return fig


def returns_figure(
    bars: pd.DataFrame | None,
    *,
    kind: str = "violin",
    symbols: Sequence[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Distribution of returns per symbol, as violins (default) or overlaid histograms."""
    if kind not in RETURN_KINDS:
        raise UnknownNameError("returns chart kind", kind, list(RETURN_KINDS))
    df, interval = _prepare_bars(bars, symbols, ("return",))
    title = "Distribution of returns"
    order = _symbols_in(df, symbols) if not df.empty else []
    palette = symbol_colors(order, fixed=colors)
    label = _return_label(interval)
    fig = go.Figure()
    for sym in order:
        pct = df.loc[df["symbol"] == sym, "return"].dropna().astype("float64") * 100
        if pct.empty:
            continue
        if kind == "violin":
            fig.add_trace(
                go.Violin(
                    y=pct,
                    name=sym,
                    line={"color": palette[sym]},
                    box={"visible": True},
                    meanline={"visible": True},
                    points=False,
                )
            )
        else:
            fig.add_trace(
                go.Histogram(x=pct, name=sym, marker={"color": palette[sym]}, opacity=0.6)
            )
    if not fig.data:
        return empty_figure(title, _no_data("returns", symbols, start, end))
    _style(fig, title, f"{interval or 'unknown'} bars, {_span(df['ts'])}")
    if kind == "violin":
        fig.update_layout(hovermode="closest")
        fig.update_xaxes(title_text="Symbol")
        fig.update_yaxes(title_text=label, ticksuffix="%")
    else:
        fig.update_layout(barmode="overlay", hovermode="closest")
        fig.update_xaxes(title_text=label, ticksuffix="%")
        fig.update_yaxes(title_text="Bars (count)")
    return fig


def return_matrix(bars: pd.DataFrame | None, symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """Returns as one column per symbol, one row per bar time (what the heatmap correlates)."""
    df, _ = _prepare_bars(bars, symbols, ("return",))
    if df.empty:
        return pd.DataFrame()
    wide = df.pivot(index="ts", columns="symbol", values="return").astype("float64")
    order = _symbols_in(df, symbols)
    return wide.loc[:, order].dropna(how="all")


def correlation_figure(
    bars: pd.DataFrame | None,
    *,
    symbols: Sequence[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
) -> go.Figure:
    """Pearson correlation of returns across symbols, on a fixed [-1, 1] diverging scale."""
    title = "Correlation of daily returns"
    wide = return_matrix(bars, symbols)
    if len(wide) < 2:
        return empty_figure(title, _no_data("returns to correlate", symbols, start, end))
    corr = wide.corr()
    names = list(corr.columns)
    fig = go.Figure(
        go.Heatmap(
            z=corr.to_numpy(),
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu",
            texttemplate="%{z:.2f}",
            hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "Pearson r"}},
        )
    )
    size = max(380, 120 + 60 * len(names))
    span = _period(wide.index.min(), wide.index.max())
    _style(fig, title, f"Pearson r over {len(wide)} bar times, {span}", height=size)
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(title_text="Symbol", side="bottom")
    fig.update_yaxes(title_text="Symbol", autorange="reversed")
    return fig


# --- streaming -----------------------------------------------------------------------------


def stream_windows_figure(
    windows: pd.DataFrame | None,
    *,
    symbols: Sequence[str] | None = None,
    last: int = 30,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """OHLC and VWAP of each symbol's latest ``last`` tick windows, one row per symbol."""
    title = f"Streaming: OHLC and VWAP of the latest {last} windows per symbol"
    if windows is None or windows.empty:
        return empty_figure(title, _no_data("tick windows", symbols, None, None))
    require_columns(windows, _WINDOW_COLS, "tick windows")
    df = windows
    if symbols:
        df = df[df["symbol"].isin([s.upper() for s in symbols])]
    df = df.assign(
        window_start=_utc_naive(df["window_start"]), window_end=_utc_naive(df["window_end"])
    )
    df = (
        df.drop_duplicates(["symbol", "window_start"], keep="last")
        .sort_values(["symbol", "window_end"])
        .groupby("symbol", sort=False)
        .tail(last)
    )
    order = _symbols_in(df, symbols) if not df.empty else []
    if not order:
        return empty_figure(title, _no_data("tick windows", symbols, None, None))
    palette = symbol_colors(order, fixed=colors)
    fig = make_subplots(
        rows=len(order), cols=1, shared_xaxes=True, subplot_titles=order, vertical_spacing=0.06
    )
    for row, sym in enumerate(order, start=1):
        g = df[df["symbol"] == sym]
        fig.add_trace(
            go.Ohlc(
                x=g["window_end"],
                open=g["open"],
                high=g["high"],
                low=g["low"],
                close=g["close"],
                name=f"{sym} OHLC",
                increasing={"line": {"color": UP_COLOR}},
                decreasing={"line": {"color": DOWN_COLOR}},
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=g["window_end"],
                y=g["vwap"].astype("float64"),
                name=f"{sym} VWAP",
                mode="lines+markers",
                line={"color": palette[sym], "width": 2},
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(title_text="Price (USD)", row=row, col=1)
    length = _fmt_duration((df["window_end"] - df["window_start"]).median())
    subtitle = f"{length} windows, {_period(df['window_end'].min(), df['window_end'].max())}"
    _style(fig, title, subtitle, height=max(420, 90 + 230 * len(order)))
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_xaxes(title_text="Window end (UTC)", row=len(order), col=1)
    return fig


def stream_metrics_figure(
    metrics: pd.DataFrame | None,
    *,
    start: DateLike | None = None,
    end: DateLike | None = None,
) -> go.Figure:
    """Throughput (input vs processed rows/s) and batch duration per micro-batch."""
    title = "Streaming job: throughput and batch duration"
    if metrics is None or metrics.empty:
        return empty_figure(title, _no_data("streaming metrics", None, start, end))
    require_columns(metrics, _METRIC_COLS, "stream metrics")
    df = metrics.assign(timestamp=_utc_naive(metrics["timestamp"])).sort_values("timestamp")
    queries = df["query_name"].fillna("(unnamed)") if "query_name" in df else None
    df = df.assign(query_name="stream" if queries is None else queries)
    names = sorted(df["query_name"].unique())
    multi = len(names) > 1
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    dashes = ("solid", "dot", "dash", "dashdot")
    for i, query in enumerate(names):
        g = df[df["query_name"] == query]
        prefix = f"{query}: " if multi else ""
        dash = dashes[i % len(dashes)]
        for col, label, colour in (
            ("input_rows_per_second", "input rows/s", METRIC_COLORS[0]),
            ("processed_rows_per_second", "processed rows/s", METRIC_COLORS[1]),
        ):
            fig.add_trace(
                go.Scatter(
                    x=g["timestamp"],
                    y=pd.to_numeric(g[col], errors="coerce").astype("float64"),
                    name=prefix + label,
                    mode="lines+markers",
                    line={"color": colour, "dash": dash},
                ),
                row=1,
                col=1,
            )
        fig.add_trace(
            go.Bar(
                x=g["timestamp"],
                y=pd.to_numeric(g["batch_duration_ms"], errors="coerce").astype("float64"),
                name=prefix + "batch duration",
                marker={"color": METRIC_COLORS[2]},
                opacity=1.0 if not multi else 0.8 - 0.5 * i / len(names),
            ),
            row=2,
            col=1,
        )
    subtitle = f"{len(df)} micro-batches, {_span(df['timestamp'])}"
    _style(fig, title, subtitle, height=560)
    fig.update_xaxes(title_text="Batch time (UTC)", row=2, col=1)
    fig.update_yaxes(title_text="Throughput (rows/s)", row=1, col=1)
    fig.update_yaxes(title_text="Batch duration (ms)", row=2, col=1)
    return fig


# --- data quality --------------------------------------------------------------------------


def quarantine_counts(quarantine: pd.DataFrame | None) -> pd.DataFrame:
    """Rows per (reason, source); a row with several reasons counts once per reason."""
    if quarantine is None or quarantine.empty:
        return pd.DataFrame(columns=["reason", "source", "rows"])
    require_columns(quarantine, ("reason",), "quarantine rows")
    reasons = quarantine["reason"].astype("string").fillna("").str.split(";")
    reasons = reasons.map(lambda parts: [p.strip() for p in parts if p.strip()] or ["(no reason)"])
    source = (
        quarantine["source"].astype("string")
        if "source" in quarantine
        else pd.Series(pd.NA, index=quarantine.index, dtype="string")
    )
    if "topic" in quarantine:
        fallback = "(no source, " + quarantine["topic"].astype("string").fillna("?") + ")"
    else:
        fallback = pd.Series("(no source)", index=quarantine.index, dtype="string")
    long = pd.DataFrame({"reason": reasons, "source": source.fillna(fallback)}).explode("reason")
    counts = long.groupby(["reason", "source"]).size().rename("rows").reset_index()
    return counts.sort_values(["rows", "reason"], ascending=[False, True], ignore_index=True)


def quarantine_figure(
    quarantine: pd.DataFrame | None,
    *,
    start: DateLike | None = None,
    end: DateLike | None = None,
) -> go.Figure:
    """Quarantined rows by reason, stacked by source, so the biggest problem is on top."""
    title = "Data quality: quarantined rows by reason and source"
    counts = quarantine_counts(quarantine)
    if counts.empty:
        return empty_figure(title, _no_data("quarantined rows", None, start, end))
    totals = counts.groupby("reason")["rows"].sum().sort_values()
    sources = sorted(counts["source"].unique(), key=lambda s: (s not in SOURCES, s))
    source_colours = symbol_colors(sources, fixed=dict(zip(SOURCES, PALETTE, strict=False)))
    fig = go.Figure()
    for src in sources:
        part = counts[counts["source"] == src].set_index("reason")["rows"]
        part = part.reindex(totals.index).dropna()
        fig.add_trace(
            go.Bar(
                x=part.to_numpy(),
                y=list(part.index),
                name=src,
                orientation="h",
                marker={"color": source_colours[src]},
            )
        )
    subtitle = f"{len(quarantine)} rows; a row with several reasons counts once per reason"
    if _period(start, end):
        subtitle += f"; {_period(start, end)}"
    _style(fig, title, subtitle, height=max(320, 160 + 32 * len(totals)))
    fig.update_layout(barmode="stack", hovermode="closest")
    fig.update_xaxes(title_text="Quarantined rows (count)", rangemode="tozero")
    if totals.max() <= 10:
        fig.update_xaxes(dtick=1)  # small counts: no 0.5-row ticks
    fig.update_yaxes(title_text="Reason", categoryorder="array", categoryarray=list(totals.index))
    return fig
