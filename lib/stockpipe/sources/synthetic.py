"""Synthetic bars: geometric Brownian motion per symbol, vectorized with numpy.

Each symbol draws its own drift, volatility, start price and typical volume from
a generator seeded by ``(seed, crc32(symbol))``, so a symbol's bars depend only
on the seed, the symbol, the interval and the range, never on which other
symbols are asked for. Bars are OHLC-consistent (``high >= max(open, close)``,
``low <= min(open, close)``, volume > 0). Daily bars fall on business days
(00:00 UTC); intraday bars fill the US regular session 14:30-21:00 UTC.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

from stockpipe.config import SourceSettings
from stockpipe.schemas import BAR_COLUMNS
from stockpipe.sources.base import (
    INTERVAL_STEP,
    Bound,
    Source,
    check_interval,
    is_daily,
    now_utc,
)
from stockpipe.times import to_utc

SESSION_OPEN = pd.Timedelta(hours=14, minutes=30)
SESSION_LENGTH = pd.Timedelta(hours=6, minutes=30)
TRADING_DAYS = 252
#: Default range when none is given: the year before today.
DEFAULT_SPAN = pd.Timedelta(days=365)


def synthetic_symbols(n: int) -> list[str]:
    """``SYN0001`` ... ``SYN{n:04d}``."""
    return [f"SYN{i:04d}" for i in range(1, n + 1)]


def bars_per_session(interval: str) -> int:
    return 1 if is_daily(interval) else int(np.ceil(SESSION_LENGTH / INTERVAL_STEP[interval]))


def bar_times(start: Bound, end: Bound, interval: str) -> pd.DatetimeIndex:
    """Bar open times in ``[start, end)``: business days, or session bars on them."""
    check_interval(interval)
    hi = to_utc(end) or now_utc().normalize()
    lo = to_utc(start) or hi - DEFAULT_SPAN
    days = pd.bdate_range(lo.normalize(), (hi - pd.Timedelta(microseconds=1)).normalize(), tz="UTC")
    if is_daily(interval):
        times = days
    else:
        step = INTERVAL_STEP[interval].value
        offsets = SESSION_OPEN.value + step * np.arange(bars_per_session(interval), dtype=np.int64)
        grid = days.asi8[:, None] + offsets[None, :]
        times = pd.DatetimeIndex(grid.ravel()).tz_localize("UTC")
    return times[(times >= lo) & (times < hi)]


def _simulate(symbols: list[str], times: pd.DatetimeIndex, interval: str, seed: int) -> dict:
    """OHLCV arrays of shape (symbols, times)."""
    n, t = len(symbols), len(times)
    per_day = bars_per_session(interval)
    dt = 1.0 / (TRADING_DAYS * per_day)
    u = np.empty((4, n))
    z = np.empty((5, n, t))
    for i, sym in enumerate(symbols):  # one small generator per symbol; the math below is 2-D
        rng = np.random.default_rng([seed, zlib.crc32(sym.encode())])
        u[:, i] = rng.random(4)
        z[:, i, :] = rng.standard_normal((5, t))
    mu = (-0.05 + 0.25 * u[0])[:, None]  # annual drift
    sigma = (0.15 + 0.45 * u[1])[:, None]  # annual volatility
    start_price = np.exp(np.log(5.0) + u[2] * np.log(500.0 / 5.0))[:, None]
    base_volume = np.exp(np.log(2e5) + u[3] * np.log(3e7 / 2e5))[:, None] / per_day
    step_sd = sigma * np.sqrt(dt)

    log_close = np.log(start_price) + np.cumsum((mu - 0.5 * sigma**2) * dt + step_sd * z[0], axis=1)
    log_prev = np.concatenate([np.log(start_price), log_close[:, :-1]], axis=1)
    session_start = (np.arange(t) % per_day == 0)[None, :]
    gap = np.where(session_start, 0.3 * step_sd * np.sqrt(per_day) * z[1], 0.0)
    open_ = np.exp(log_prev + gap)
    close = np.exp(log_close)
    high = np.maximum(open_, close) * np.exp(0.5 * step_sd * np.abs(z[2]))
    low = np.minimum(open_, close) * np.exp(-0.5 * step_sd * np.abs(z[3]))
    volume = np.maximum(1, np.rint(base_volume * np.exp(0.35 * z[4] - 0.06))).astype(np.int64)
    # Rounding is monotone, so it keeps high >= max(open, close) and low <= min(open, close).
    ohlc = {
        k: np.round(v, 4)
        for k, v in (("open", open_), ("high", high), ("low", low), ("close", close))
    }
    return {**ohlc, "volume": volume}


def _frame(symbols: list[str], times: pd.DatetimeIndex, arrays: dict, **const: Any) -> pd.DataFrame:
    """Arrays of shape (symbols, times) as one long frame, symbol-major.

    Built directly in the contract's dtypes: running ``conform_bars`` over a million
    generated rows would spend most of the time re-typing what is already typed.
    """
    n, t = len(symbols), len(times)
    close = arrays["close"].ravel()
    volume = arrays["volume"].ravel()
    columns: dict[str, Any] = {
        "symbol": np.repeat(np.asarray(symbols, dtype=object), t),
        "ts": pd.DatetimeIndex(np.tile(times.asi8, n)).tz_localize("UTC"),
        "open": arrays["open"].ravel(),
        "high": arrays["high"].ravel(),
        "low": arrays["low"].ravel(),
        "close": close,
        "adj_close": close,
        "volume": pd.arrays.IntegerArray(volume, np.zeros(volume.shape, dtype=bool)),
    }
    columns.update(const)
    return pd.DataFrame(columns, copy=False)


def synthetic_bars(
    n_symbols: int = 10,
    start: Bound = None,
    end: Bound = None,
    interval: str = "1d",
    seed: int = 42,
    batch_id: str = "synthetic",
    *,
    symbols: list[str] | None = None,
    ingested_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Conformed bars of ``n_symbols`` generated symbols (or the named ``symbols``).

    For benchmarks and demos: 500 symbols x 10 years of daily bars (1.26 M rows)
    take about a second.
    """
    check_interval(interval)
    names = [s.strip().upper() for s in symbols] if symbols else synthetic_symbols(n_symbols)
    times = bar_times(start, end, interval)
    frame = _frame(
        names,
        times,
        _simulate(names, times, interval, seed),
        interval=interval,
        source="synthetic",
        ingested_at=pd.Timestamp(ingested_at if ingested_at is not None else now_utc()),
        batch_id=batch_id,
    )
    return frame[list(BAR_COLUMNS)]


class SyntheticSource(Source):
    """Generated bars for any symbol; lists ``SYN0001``... (``n_symbols``) or ``symbols``.

    Options: ``n_symbols`` (default 10), ``symbols`` (names to list instead),
    ``seed`` (default 42).
    """

    name = "synthetic"

    def __init__(
        self,
        settings: SourceSettings | None = None,
        *,
        n_symbols: int = 10,
        symbols: list[str] | str | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__(settings)
        if isinstance(symbols, str):
            symbols = [s for s in symbols.split(",") if s.strip()]
        self.symbols = [s.strip().upper() for s in symbols] if symbols else None
        self.n_symbols = n_symbols
        self.seed = seed

    def available_symbols(self, interval: str | None = None) -> list[str]:
        return list(self.symbols) if self.symbols else synthetic_symbols(self.n_symbols)

    def raw_bars(
        self,
        symbol: str,
        *,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        interval: str,
        **kw: Any,
    ) -> pd.DataFrame:
        self.refuse_options(kw)
        times = bar_times(start, end, interval)
        return _frame([symbol], times, _simulate([symbol], times, interval, self.seed)).drop(
            columns="symbol"
        )
