"""What every data source shares: the fetch lifecycle, date bounds and rate-limit retries.

A source implements one method, :meth:`Source.raw_bars`, returning the API's bars
as ``ts, open, high, low, close, adj_close, volume``. :meth:`Source.fetch` owns the
rest, so every source labels, filters and types bars the same way:

* daily bars (``1d``): ``ts`` is the trading date at 00:00 UTC, whatever the
  exchange's time zone; intraday bars: the bar's open instant converted to UTC;
* ``start`` is inclusive and ``end`` exclusive (as in yfinance); a date means
  00:00 UTC of that day, a naive datetime is read as UTC;
* bad rows (NaN price, negative volume, high < low) pass through untouched: the
  Spark job quarantines them with a reason, so nothing is dropped silently here;
* no bar in the range is a :class:`~stockpipe.errors.SourceError` for that symbol.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pandas as pd
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from stockpipe.config import SourceSettings, get_settings
from stockpipe.errors import (
    EmptyWindowError,
    MissingColumnsError,
    ParameterError,
    RateLimitError,
    SourceError,
    UnknownNameError,
)
from stockpipe.schemas import INTERVALS, conform_bars
from stockpipe.times import TimeLike, utc_window

#: Columns a source's :meth:`Source.raw_bars` returns.
RAW_BAR_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "adj_close", "volume")

#: Length of one bar of each intraday interval.
INTERVAL_STEP: dict[str, pd.Timedelta] = {
    "1h": pd.Timedelta(hours=1),
    "5m": pd.Timedelta(minutes=5),
    "1m": pd.Timedelta(minutes=1),
}

Bound = TimeLike
T = TypeVar("T")


def check_interval(interval: str) -> str:
    """Return ``interval`` if the bar contract knows it, else list the allowed ones."""
    if interval not in INTERVALS:
        raise UnknownNameError("interval", interval, list(INTERVALS))
    return interval


def is_daily(interval: str) -> bool:
    return check_interval(interval) == "1d"


def describe_range(start: pd.Timestamp | None, end: pd.Timestamp | None) -> str:
    def fmt(ts: pd.Timestamp | None, open_end: str) -> str:
        if ts is None:
            return open_end
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat()

    return f"[{fmt(start, 'beginning')}, {fmt(end, 'now')})"


def daily_ts(dates: Any) -> pd.DatetimeIndex:
    """Trading dates as 00:00 UTC: the calendar date as the exchange wrote it."""
    idx = pd.DatetimeIndex(dates)
    if idx.tz is not None:
        idx = idx.tz_localize(None)  # keep the exchange's wall-clock date, drop its zone
    return idx.normalize().tz_localize("UTC")


def intraday_ts(times: Any, tz: str | None) -> pd.DatetimeIndex:
    """Bar open instants in UTC; naive times are read in ``tz`` (DST-aware)."""
    idx = pd.DatetimeIndex(times)
    if idx.tz is None:
        idx = idx.tz_localize(tz or "UTC", ambiguous="raise", nonexistent="raise")
    return idx.tz_convert("UTC")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for rate-limited calls.

    ``attempts`` counts the first call. Tests pass ``wait_initial=0`` (or a recording
    ``sleep``) so retries cost no time.
    """

    attempts: int = 4
    wait_initial: float = 2.0
    wait_max: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry while it raises :class:`RateLimitError`, then re-raise it."""
        retrying = Retrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=wait_exponential(multiplier=self.wait_initial, max=self.wait_max),
            retry=retry_if_exception_type(RateLimitError),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except RateLimitError as exc:
            raise RateLimitError(
                exc.source,
                exc.symbol,
                f"still rate limited after {self.attempts} attempts: {exc.reason}",
            ) from exc


class Source(ABC):
    """A place bars come from. Subclasses set ``name`` and write :meth:`raw_bars`."""

    name: ClassVar[str]

    def __init__(self, settings: SourceSettings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> SourceSettings:
        """The settings given, else the process-wide ones (read on first use)."""
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @abstractmethod
    def raw_bars(
        self,
        symbol: str,
        *,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        interval: str,
        **kw: Any,
    ) -> pd.DataFrame:
        """The source's bars for one symbol, columns :data:`RAW_BAR_COLUMNS`.

        ``ts`` follows the module's rule (daily: 00:00 UTC of the trading date;
        intraday: UTC instant). Rows outside ``[start, end)`` may be returned; the
        caller filters. Raise :class:`SourceError` / :class:`RateLimitError`.
        """

    def available_symbols(self, interval: str | None = None) -> list[str]:
        """Symbols this source can list for ``interval`` (empty: give symbols; an API decides)."""
        return []

    def expect_symbols(self, symbols: list[str]) -> None:  # noqa: B027 (optional hook)
        """Told the symbols of a run before the first fetch (e.g. to name a one-symbol file)."""

    def refuse_options(self, options: dict[str, Any]) -> None:
        """Refuse fetch options this source does not take (``raw_bars``' ``**kw``)."""
        if options:
            raise ParameterError("options", sorted(options), f"taken by the {self.name} source")

    def note(self, symbol: str) -> str | None:
        """What a reader should know about the last fetch of ``symbol`` (e.g. rows skipped)."""
        return None

    def fetch(
        self,
        symbol: str,
        *,
        start: Bound = None,
        end: Bound = None,
        interval: str = "1d",
        batch_id: str,
        ingested_at: pd.Timestamp | None = None,
        **kw: Any,
    ) -> pd.DataFrame:
        """Bars of one symbol in ``[start, end)``, conformed to the bar contract."""
        check_interval(interval)
        try:
            symbol = normalize_symbol(symbol)
        except ValueError as exc:
            raise SourceError(self.name, str(symbol), str(exc)) from exc
        lo, hi = utc_window(start, end)
        raw = self.raw_bars(symbol, start=lo, end=hi, interval=interval, **kw)
        missing = [c for c in RAW_BAR_COLUMNS if c not in raw.columns]
        if missing:  # a bug in the source, not a per-symbol failure
            raise MissingColumnsError(f"the raw bars of {type(self).__name__}", missing)
        bars = raw.loc[:, list(RAW_BAR_COLUMNS)].copy().rename_axis(columns=None)
        bars["ts"] = pd.to_datetime(bars["ts"], utc=True)
        keep = pd.Series(True, index=bars.index)
        if lo is not None:
            keep &= bars["ts"] >= lo
        if hi is not None:
            keep &= bars["ts"] < hi
        bars = bars.loc[keep]
        if bars.empty:
            raise EmptyWindowError(
                self.name, symbol, f"no {interval} bars in {describe_range(lo, hi)}{_had(raw)}"
            )
        bars = bars.sort_values("ts", kind="stable")
        bars.insert(0, "symbol", symbol)
        bars.insert(1, "interval", interval)
        bars["source"] = self.name
        bars["ingested_at"] = ingested_at if ingested_at is not None else now_utc()
        bars["batch_id"] = batch_id
        try:
            return conform_bars(bars)
        except (TypeError, ValueError) as exc:  # e.g. a fractional volume
            raise SourceError(
                self.name, symbol, f"bars do not fit the bar contract: {exc}"
            ) from exc


def _had(raw: pd.DataFrame) -> str:
    if raw.empty:
        return ""
    ts = pd.to_datetime(raw["ts"], utc=True)
    return f" (the answer holds {len(raw)} bars from {ts.min()} to {ts.max()})"


_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-=^_]*$")


def normalize_symbol(symbol: str) -> str:
    """Upper-case and check a ticker (letters, digits and ``. - = ^ _``)."""
    sym = str(symbol).strip().upper()
    if not _SYMBOL_RE.match(sym):
        raise ParameterError(
            "symbol", symbol, "a ticker symbol", use="letters, digits and . - = ^ _"
        )
    return sym


def now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")
