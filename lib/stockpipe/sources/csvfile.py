"""Bars from Yahoo-style CSV files: ``Date,Open,High,Low,Close[,Adj Close],Volume``.

The first column (``Date``, ``Datetime`` or unnamed, as pandas writes an index)
holds dates or datetimes; a datetime may carry its UTC offset, as yfinance
writes intraday bars (``2017-11-03 09:30:00-04:00``). Naive datetimes are read in
the ``tz`` option (default UTC). Daily rows keep the date as written, at 00:00 UTC.

The module is named ``csvfile`` so that it can never be mistaken for the stdlib
``csv``; the source's registry name is ``csv``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from stockpipe.config import Settings
from stockpipe.errors import SourceError
from stockpipe.sources.base import (
    INTERVAL_STEP,
    RAW_BAR_COLUMNS,
    Source,
    daily_ts,
    intraday_ts,
    is_daily,
)

#: Lower-cased CSV header -> raw bar column.
_HEADER_MAP: dict[str, str] = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "volume": "volume",
}
_TIME_HEADERS = ("date", "datetime", "timestamp", "time", "unnamed: 0", "")
_REQUIRED = ("open", "high", "low", "close", "volume")
_OFFSET_RE = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


class CsvFormatError(ValueError):
    """The file is not a Yahoo-style bar CSV; the message says what is wrong."""


def read_csv_bars(path: Path | str, *, interval: str, tz: str = "UTC") -> pd.DataFrame:
    """Parse one CSV into raw bars (columns ``RAW_BAR_COLUMNS``), values as written.

    Raises :class:`CsvFormatError` when a column is missing, a time does not parse,
    or the file's bar spacing does not match ``interval``.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.empty:
        raise CsvFormatError("the file holds no rows")
    time_col = frame.columns[0]
    if time_col.strip().lower() not in _TIME_HEADERS:
        raise CsvFormatError(f"first column is {time_col!r}; expected Date or Datetime")
    renamed = {
        c: _HEADER_MAP[c.strip().lower()]
        for c in frame.columns[1:]
        if c.strip().lower() in _HEADER_MAP
    }
    missing = [c for c in _REQUIRED if c not in renamed.values()]
    if missing:
        raise CsvFormatError(f"missing column(s) {', '.join(m.title() for m in missing)}")
    raw = frame.rename(columns=renamed)
    if "adj_close" not in raw.columns:
        raw["adj_close"] = None
    stamps = frame[time_col].str.strip()
    raw["ts"] = _parse_times(stamps, interval=interval, tz=tz)
    for col in ("open", "high", "low", "close", "adj_close", "volume"):
        # Empty cells become NaN; any text that is not a number too (as Yahoo's "null").
        raw[col] = pd.to_numeric(raw[col], errors="coerce")
    return raw.loc[:, list(RAW_BAR_COLUMNS)].reset_index(drop=True)


def _parse_times(stamps: pd.Series, *, interval: str, tz: str) -> pd.DatetimeIndex:
    wall = pd.to_datetime(stamps.str.slice(0, 19), format="ISO8601", errors="coerce")
    bad = stamps[wall.isna()]
    if not bad.empty:
        raise CsvFormatError(f"time {bad.iloc[0]!r} (row {bad.index[0] + 2}) does not parse")
    has_time = bool((wall != wall.dt.normalize()).any())
    file_interval = _spacing(wall) if has_time else "1d"
    if file_interval != interval:
        raise CsvFormatError(
            f"the file holds {file_interval or 'irregular intraday'} bars, "
            f"not {interval}; ask for interval={file_interval!r}"
        )
    if is_daily(interval):
        return daily_ts(wall)
    offsets = stamps.str.contains(_OFFSET_RE)
    if offsets.all():
        return pd.DatetimeIndex(pd.to_datetime(stamps, format="ISO8601", utc=True))
    if offsets.any():
        raise CsvFormatError("some times carry a UTC offset and some do not")
    try:
        return intraday_ts(wall, tz)
    except (ValueError, TypeError) as exc:  # e.g. a time that does not exist in tz (DST)
        raise CsvFormatError(f"times cannot be read in time zone {tz!r}: {exc}") from exc


def _spacing(wall: pd.Series) -> str | None:
    """The intraday interval whose step is the most common gap between bars."""
    gaps = wall.sort_values().diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        return None
    step = gaps.mode().iloc[0]
    return next((name for name, td in INTERVAL_STEP.items() if td == step), None)


def file_interval(path: Path, nrows: int = 200) -> str | None:
    """The interval of a CSV's first rows, or ``None`` when it cannot be read."""
    try:
        head = pd.read_csv(path, usecols=[0], nrows=nrows, dtype=str).iloc[:, 0].str.strip()
        wall = pd.to_datetime(head.str.slice(0, 19), format="ISO8601")
    except (ValueError, OSError, IndexError):
        return None
    return _spacing(wall) if bool((wall != wall.dt.normalize()).any()) else "1d"


class CsvSource(Source):
    """Yahoo-style CSV files: ``path`` is one file or a directory of ``SYMBOL.csv``.

    For one file the symbol is the ``symbol`` option, else the file name's stem,
    upper-cased. Naive intraday times are read in ``tz`` (default UTC).
    """

    name = "csv"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        path: Path | str,
        symbol: str | None = None,
        tz: str = "UTC",
    ) -> None:
        super().__init__(settings)
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"{self.name} source: no such file or directory: {self.path}")
        if self.path.is_dir() and symbol:
            raise ValueError("the symbol option applies to a single file, not a directory")
        self.symbol = symbol.strip().upper() if symbol else None
        self.tz = tz

    def _files(self) -> dict[str, Path]:
        """Symbol -> file."""
        if self.path.is_file():
            return {self.symbol or self.path.stem.upper(): self.path}
        files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        return {p.stem.upper(): p for p in files}

    def available_symbols(self, interval: str | None = None) -> list[str]:
        files = self._files()
        if interval is None:
            return list(files)
        return [sym for sym, p in files.items() if file_interval(p) == interval]

    def raw_bars(
        self,
        symbol: str,
        *,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        interval: str,
        **kw: Any,
    ) -> pd.DataFrame:
        files = self._files()
        path = files.get(symbol)
        if path is None:
            where = f"{self.path}" + (" (holds: " + ", ".join(files) + ")" if files else "")
            raise SourceError(self.name, symbol, f"no CSV for this symbol in {where}")
        try:
            return read_csv_bars(path, interval=interval, tz=self.tz)
        except CsvFormatError as exc:
            raise SourceError(self.name, symbol, f"{path.name}: {exc}") from exc
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SourceError(self.name, symbol, f"{path.name} cannot be read: {exc}") from exc
