"""Bars from Yahoo Finance through yfinance (``yfinance.download``, one symbol a call).

What yfinance 1.7.0 really does, and how it is handled here:

* ``download`` never raises for a ticker: every failure (rate limit, unknown
  ticker, no prices) is caught, logged on the ``yfinance`` logger and answered
  with an empty frame. So the call runs with a handler on that logger; a logged
  ``YFRateLimitError`` is retried with backoff, anything else becomes a
  :class:`SourceError` carrying yfinance's own reason.
* columns come as a MultiIndex ``(Price, Ticker)`` (default, also for one
  ticker), ``(Ticker, Price)`` with ``group_by="ticker"``, or flat with
  ``multi_level_index=False``; all three are read.
* ``auto_adjust=False`` keeps ``Adj Close``; daily indexes are naive trading
  dates (``ignore_tz=True``), intraday ones carry the exchange's zone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from stockpipe.config import SourceSettings
from stockpipe.errors import MissingColumnsError, RateLimitError, SourceError
from stockpipe.sources.base import RetryPolicy, Source, daily_ts, intraday_ts, is_daily

#: Our interval -> yfinance's.
YF_INTERVALS: dict[str, str] = {"1d": "1d", "1h": "1h", "5m": "5m", "1m": "1m"}

_YF_COLUMNS: dict[str, str] = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}
_RATE_LIMIT_MARKERS = ("YFRateLimitError", "Too Many Requests", "Rate limited")


class _LogCapture(logging.Handler):
    """Collects the ERROR records yfinance logs instead of raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage().strip()
        if msg and msg not in self.messages:
            self.messages.append(msg)


@contextmanager
def _yfinance_errors() -> Iterator[_LogCapture]:
    logger = logging.getLogger("yfinance")
    handler = _LogCapture()
    level = logger.level
    if logger.getEffectiveLevel() > logging.ERROR:  # silenced by the caller: still listen
        logger.setLevel(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _reason(messages: list[str]) -> str:
    """yfinance's error lines, without its 'N Failed download:' header."""
    lines = [m for m in messages if not m.lower().endswith("failed download:")]
    return "; ".join(lines) if lines else "Yahoo returned no bars"


class YahooSource(Source):
    """Yahoo Finance bars: ``1d`` and intraday (``1h``, ``5m``, ``1m``; Yahoo keeps
    intraday history for a limited window only).

    Options: ``period`` (used when neither start nor end is given; default
    ``1mo``), ``prepost`` (include extended hours), ``retry`` (a :class:`RetryPolicy`),
    ``timeout`` (seconds per HTTP request).
    """

    name = "yahoo"

    def __init__(
        self,
        settings: SourceSettings | None = None,
        *,
        period: str = "1mo",
        prepost: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = 20.0,
    ) -> None:
        super().__init__(settings)
        self.period = period
        self.prepost = prepost
        self.retry = retry or RetryPolicy(attempts=4, wait_initial=2.0, wait_max=30.0)
        self.timeout = timeout

    def raw_bars(
        self,
        symbol: str,
        *,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        interval: str,
        period: str | None = None,
        **kw: Any,
    ) -> pd.DataFrame:
        self.refuse_options(kw)
        args: dict[str, Any] = {
            "start": _yf_bound(start),
            "end": _yf_bound(end),
            "interval": YF_INTERVALS[interval],
            "auto_adjust": False,
            "actions": False,
            "progress": False,
            "threads": False,
            "prepost": self.prepost,
            "ignore_tz": is_daily(interval),
            "timeout": self.timeout,
        }
        if start is None and end is None:
            args["period"] = period or self.period
        frame = self.retry.call(lambda: self._download(symbol, args))
        return normalize_download(frame, symbol, interval, source=self.name)

    def _download(self, symbol: str, args: dict[str, Any]) -> pd.DataFrame:
        import yfinance as yf
        from yfinance.exceptions import YFRateLimitError

        with _yfinance_errors() as logged:
            try:
                frame = yf.download(symbol, **args)
            except YFRateLimitError as exc:  # not raised by 1.7.0's download, but documented
                raise RateLimitError(self.name, symbol, str(exc)) from exc
            except Exception as exc:
                raise SourceError(self.name, symbol, f"yfinance failed: {exc!r}") from exc
        if any(m in msg for msg in logged.messages for m in _RATE_LIMIT_MARKERS):
            raise RateLimitError(self.name, symbol, _reason(logged.messages))
        if frame is None or frame.empty or frame.isna().all().all():
            raise SourceError(self.name, symbol, _reason(logged.messages))
        return frame


def _yf_bound(ts: pd.Timestamp | None) -> str | pd.Timestamp | None:
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts


def _price_level(columns: pd.MultiIndex) -> int:
    for level in range(columns.nlevels):
        if "Close" in set(columns.get_level_values(level)):
            return level
    raise MissingColumnsError("every level of the download's columns", ["Close"])


def normalize_download(
    frame: pd.DataFrame, symbol: str, interval: str, *, source: str = "yahoo"
) -> pd.DataFrame:
    """A ``yfinance.download`` frame (any column layout) -> raw bars of ``symbol``.

    Rows where every field is empty are dropped: they are padding that download's
    multi-ticker join adds for dates one ticker lacks (yfinance itself drops such
    rows per ticker). Any other row, however odd, is kept.
    """
    cols = frame.columns
    if isinstance(cols, pd.MultiIndex):
        try:
            price_level = _price_level(cols)
        except MissingColumnsError:
            raise SourceError(source, symbol, f"unexpected columns {list(cols)[:6]}") from None
        ticker_level = 1 - price_level if cols.nlevels == 2 else None
        if ticker_level is None:
            raise SourceError(source, symbol, f"unexpected {cols.nlevels}-level columns")
        tickers = {str(t).upper(): t for t in cols.get_level_values(ticker_level).unique()}
        if symbol not in tickers:
            raise SourceError(source, symbol, f"not in the answer (it holds {sorted(tickers)})")
        one = frame.xs(tickers[symbol], axis=1, level=ticker_level)
    else:
        one = frame
    missing = [c for c in ("Open", "High", "Low", "Close", "Volume") if c not in one.columns]
    if missing:
        raise SourceError(source, symbol, f"answer lacks columns {missing}")
    raw = one.rename(columns=_YF_COLUMNS)
    if "adj_close" not in raw.columns:
        raw = raw.assign(adj_close=float("nan"))
    values = ["open", "high", "low", "close", "adj_close", "volume"]
    raw = raw.loc[~raw[values].isna().all(axis=1), values]
    if raw.empty:
        raise SourceError(source, symbol, "Yahoo returned no bars")
    index = pd.DatetimeIndex(raw.index)
    if not is_daily(interval) and index.tz is None:
        raise SourceError(source, symbol, "intraday times carry no time zone (ignore_tz=True?)")
    ts = daily_ts(index) if is_daily(interval) else intraday_ts(index, None)
    out = raw.reset_index(drop=True).rename_axis(columns=None)
    out.insert(0, "ts", ts)
    return out
