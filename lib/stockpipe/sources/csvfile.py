"""Bars from price CSV files as exporters write them (Yahoo, Stooq, Alpha Vantage, brokers).

A file needs a time column and open, high, low, close and volume; adjusted close
and a symbol column are optional. Header spellings are matched case-, space- and
punctuation-blind, so ``Adj Close``, ``adj_close``, ``adjclose`` and
``adjusted_close`` are one column, as are ``Vol.``/``<VOL>``/``volume`` and
``Date``/``Datetime``/``timestamp``/``<DATE>`` (a separate ``Time`` column is joined
to the date). The delimiter is the header's most frequent of ``, ; tab |``.

Numbers may carry thousands separators (``1,234.50``), a currency sign (``$12.30``)
and, for volume, a K/M/B suffix (``12.5M``). Files separated by ``;`` use decimal
commas (``1.234,50``) unless ``decimal`` says otherwise. A cell that is not a number
(``null``, ``-``) becomes NaN and passes through: the Spark job quarantines the bar.

Times are read by :mod:`stockpipe.sources.csvtimes` (ISO, US month-first, day-first,
month names, ``YYYYMMDD``, epochs, zones and offsets). Daily rows keep the date as
written, at 00:00 UTC; naive intraday times are read in ``tz`` (default UTC). A row
whose time cannot be read fails the symbol with its row number and the layouts
tried, or with ``errors="skip"`` is left out and counted in the symbol's note.

The module is named ``csvfile`` so that it can never be mistaken for the stdlib
``csv``; the source's registry name is ``csv``.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockpipe.config import SourceSettings
from stockpipe.errors import CsvFormatError, ParameterError, SourceError, UnknownNameError
from stockpipe.sources.base import (
    INTERVAL_STEP,
    RAW_BAR_COLUMNS,
    Source,
    daily_ts,
)
from stockpipe.sources.csvtimes import ParsedTimes, parse_times

__all__ = ["CsvSource", "CsvTable", "read_csv_table", "table_bars"]

#: Normalised header (lower case, letters and digits only) -> column, best match first.
_HEADERS: dict[str, tuple[str, ...]] = {
    "time": ("datetime", "timestamp", "date", "tradedate", "time", "unnamed0", ""),
    "open": ("open", "openprice", "opening"),
    "high": ("high", "highprice"),
    "low": ("low", "lowprice"),
    "close": ("close", "closelast", "closeprice", "last", "price"),
    "adj_close": ("adjclose", "adjustedclose", "adjclosing"),
    "volume": ("volume", "vol", "tickvolume", "tickvol"),
    "symbol": ("symbol", "ticker"),
}
_REQUIRED = ("open", "high", "low", "close", "volume")
_SEPARATORS = (",", ";", "\t", "|")
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9}
ERRORS = ("raise", "skip")


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(header).lower())


def _sniff_separator(path: Path) -> str:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    return max(_SEPARATORS, key=header.count)


@dataclass
class CsvTable:
    """One file read once: numbers, times and symbols per row, whatever interval is asked."""

    path: Path
    bars: pd.DataFrame  # ts (wall), open .. volume, plus "symbol" when the file has one
    times: ParsedTimes
    rows: pd.Series  # the file's row number of each frame row (header = row 1)
    has_symbols: bool

    def symbols(self) -> list[str]:
        if not self.has_symbols:
            return []
        return sorted(set(self.bars["symbol"].dropna()))


def read_csv_table(
    path: Path | str,
    *,
    tz: str = "UTC",
    date_format: str | None = None,
    dayfirst: bool | None = None,
    decimal: str | None = None,
) -> CsvTable:
    """Read a price CSV: map its headers, numbers and times (interval-independent)."""
    path = Path(path)
    sep = _sniff_separator(path)
    frame = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        skipinitialspace=True,
        encoding="utf-8-sig",
    )
    frame = frame.loc[~frame.eq("").all(axis=1)]  # blank lines (kept so row numbers hold)
    if frame.empty:
        raise CsvFormatError("the file holds no rows")
    columns = _map_headers(list(frame.columns))
    missing = [c for c in ("time", *_REQUIRED) if c not in columns]
    if missing:
        names = ", ".join("Date" if m == "time" else m.replace("_", " ").title() for m in missing)
        raise CsvFormatError(f"missing column(s) {names} (header: {', '.join(frame.columns)})")
    stamps = frame[columns["time"]].str.strip()
    clock = next((c for c in frame.columns if _key(c) == "time" and c != columns["time"]), None)
    if clock is not None:  # Stooq/MetaTrader: a date column and a time column
        stamps = (stamps + " " + frame[clock].str.strip()).str.strip()
    dec = decimal or ("," if sep == ";" else ".")
    out = pd.DataFrame(index=frame.index)
    for col in ("open", "high", "low", "close", "adj_close", "volume"):
        if col in columns:
            header = columns[col]
            out[col] = _numbers(frame[header], dec, header=header, volume=col == "volume")
        else:
            out[col] = np.nan
    if "symbol" in columns:
        out["symbol"] = frame[columns["symbol"]].str.strip().str.upper().replace("", None)
    times = parse_times(stamps, tz=tz, date_format=date_format, dayfirst=dayfirst)
    out["ts"] = times.wall
    return CsvTable(
        path=path,
        bars=out,
        times=times,
        rows=pd.Series(frame.index + 2, index=frame.index),
        has_symbols="symbol" in columns,
    )


def _map_headers(headers: list[str]) -> dict[str, str]:
    """Column role -> the file's header, taking each role's best-ranked spelling."""
    keys = {h: _key(h) for h in headers}
    out: dict[str, str] = {}
    for role, spellings in _HEADERS.items():
        for spelling in spellings:
            taken = set(out.values())
            match = next((h for h, k in keys.items() if k == spelling and h not in taken), None)
            if match is not None:
                out[role] = match
                break
    return out


def _numbers(cells: pd.Series, decimal: str, *, header: str, volume: bool) -> pd.Series:
    """Numbers as exporters write them; anything else (``null``, ``-``) becomes NaN."""
    values = pd.to_numeric(cells, errors="coerce")
    # plain numbers take the fast path; the rest are cleaned (a comma decimal mark
    # makes "1.234" a thousand, so every cell is)
    todo = values.isna() & cells.str.strip().ne("") if decimal == "." else cells.notna()
    if not todo.any():
        return values
    text = cells[todo].str.strip().str.replace(r"^[$€£¥]|[$€£¥\s]", "", regex=True)
    if decimal == ".":
        grouped = text.str.contains(",", regex=False)
        wrong = grouped & ~text.str.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?[KMBkmb]?")
        if wrong.any():
            row = wrong.idxmax()
            raise CsvFormatError(
                f"column {header!r}: {text[row]!r} (row {row + 2}) is not a number with "
                "thousands separators; for decimal commas pass decimal=','"
            )
    thousands = "." if decimal == "," else ","
    text = text.str.replace(thousands, "", regex=False).str.replace(decimal, ".", regex=False)
    factor = pd.Series(1.0, index=text.index)
    if volume:
        suffix = text.str[-1:].str.upper()
        has = suffix.isin(list(_SUFFIX))
        factor[has] = suffix[has].map(_SUFFIX)
        text = text.where(~has, text.str[:-1])
    cleaned = pd.to_numeric(text, errors="coerce") * factor
    # 1.23M is 1,230,000 shares, not 1229999.9999999998
    values[todo] = cleaned.round(0) if volume else cleaned
    return values


def _spacing(wall: pd.Series) -> str | None:
    """The interval whose step is the most common gap between bars (daily from a day up)."""
    gaps = wall.drop_duplicates().sort_values().diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        return None
    step = gaps.mode().iloc[0]
    if step >= pd.Timedelta(days=1):
        return "1d"
    return next((name for name, td in INTERVAL_STEP.items() if td == step), None)


def _interval_of(wall: pd.Series) -> str | None:
    wall = wall.dropna()
    if wall.empty:
        return None
    return _spacing(wall) if bool((wall != wall.dt.normalize()).any()) else "1d"


def table_bars(
    table: CsvTable,
    *,
    interval: str,
    tz: str = "UTC",
    symbol: str | None = None,
    errors: str = "raise",
) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Raw bars of one symbol (or the whole file) and the rows skipped: (row, reason).

    Raises :class:`CsvFormatError` for a file-level problem, or for a bad row when
    ``errors="raise"``.
    """
    bars, times = table.bars, table.times
    mine = pd.Series(True, index=bars.index)
    if table.has_symbols and symbol is not None:
        mine = bars["symbol"].eq(symbol) | bars["symbol"].isna()
    bad = {i: r for i, r in times.bad.items() if mine[i]}
    if table.has_symbols:
        for i in bars.index[mine & bars["symbol"].isna()]:
            bad.setdefault(int(i), "no symbol in the symbol column")
    _raise_first(table, bad, int(mine.sum()), errors)
    good = mine & ~bars.index.isin(list(bad))
    wall, naive = times.wall[good], times.naive[good]
    if naive.any() and not naive.all():
        raise CsvFormatError("some times carry a UTC offset or zone and some do not")
    found = _interval_of(wall if naive.all() else times.utc[good])
    if found != interval:
        raise CsvFormatError(
            f"the file holds {found or 'irregular intraday'} bars, "
            f"not {interval}; ask for interval={found!r}"
        )
    if interval == "1d":
        ts = pd.Series(daily_ts(wall), index=wall.index)
    elif naive.all():
        local = wall.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        for i in local.index[local.isna()]:
            bad[int(i)] = f"time {str(wall[i])!r} does not exist or is ambiguous in {tz} (DST)"
        _raise_first(table, bad, int(mine.sum()), errors)
        ts = local.dt.tz_convert("UTC")
    else:
        ts = times.utc[good]
    problems = sorted((int(table.rows[i]), reason) for i, reason in bad.items())
    keep = good & ~bars.index.isin(list(bad))
    out = bars.loc[keep].copy()
    out["ts"] = ts.loc[out.index]
    return out.loc[:, list(RAW_BAR_COLUMNS)].reset_index(drop=True), problems


def _raise_first(table: CsvTable, bad: dict[int, str], rows: int, errors: str) -> None:
    """With ``errors="raise"``, the first unreadable row fails the symbol."""
    if bad and errors == "raise":
        row, reason = min((int(table.rows[i]), r) for i, r in bad.items())
        raise CsvFormatError(
            f"row {row}: {reason}; {len(bad)} of {rows} rows cannot be read "
            "(errors='skip' reads the others)"
        )


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


class CsvSource(Source):
    """Price CSVs: ``path`` is one file, a directory of them, or a glob (``exports/*.csv``).

    A file with a symbol column holds the bars of every symbol it names. A file
    without one holds one symbol's bars: a directory's or a glob's files are named
    by their file name's stem (upper-cased); a single file by the ``symbol``
    option, else the one symbol asked for (``symbols="IBM"``), else its stem.

    ``date_format`` (strptime) or ``dayfirst`` settle a file whose dates read both
    ways; ``errors="skip"`` leaves out rows that cannot be read (counted in the
    symbol's :meth:`note`); ``decimal`` overrides the decimal mark.
    """

    name = "csv"

    def __init__(
        self,
        settings: SourceSettings | None = None,
        *,
        path: Path | str,
        symbol: str | None = None,
        tz: str = "UTC",
        date_format: str | None = None,
        dayfirst: bool | None = None,
        decimal: str | None = None,
        errors: str = "raise",
    ) -> None:
        super().__init__(settings)
        if errors not in ERRORS:
            raise UnknownNameError("errors mode", errors, list(ERRORS))
        text = str(path)
        self.pattern = str(Path(text).expanduser()) if _has_glob(text) else None
        self.path = Path(text).expanduser()
        if self.pattern is None and not self.path.exists():
            raise ParameterError("path", text, "an existing file or directory")
        if self.pattern is not None and not self._files():
            raise ParameterError("path", text, "a glob that matches a file")
        if symbol and not self._single:
            raise ParameterError(
                "symbol", symbol, "for a directory or glob", use="it with a single file only"
            )
        self.symbol = symbol.strip().upper() if symbol else None
        self.tz = tz
        self.errors = errors
        self._options = {"tz": tz, "date_format": date_format, "dayfirst": dayfirst}
        self._options["decimal"] = decimal
        self._tables: dict[Path, CsvTable] = {}
        self._notes: dict[str, str] = {}

    @property
    def _single(self) -> bool:
        return self.pattern is None and self.path.is_file()

    def _files(self) -> list[Path]:
        if self.pattern is not None:
            return sorted(Path(p) for p in glob.glob(self.pattern) if Path(p).is_file())
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")

    def _table(self, path: Path) -> CsvTable:
        if path not in self._tables:
            self._tables[path] = read_csv_table(path, **self._options)
        return self._tables[path]

    def _has_symbol_column(self, path: Path) -> bool:
        header = pd.read_csv(path, sep=_sniff_separator(path), nrows=0, encoding="utf-8-sig")
        return "symbol" in _map_headers(list(header.columns))

    def expect_symbols(self, symbols: list[str]) -> None:
        # The one symbol asked names a single file without a symbol column, whatever
        # the file is called (a user's download is rarely named after its ticker).
        one = self._single and self.symbol is None and len(symbols) == 1
        if one and not self._has_symbol_column(self.path):
            self.symbol = symbols[0]

    def _index(self) -> dict[str, Path]:
        """Symbol -> the file that holds it (files with a symbol column are read)."""
        out: dict[str, Path] = {}
        for path in self._files():
            if self._has_symbol_column(path):
                for sym in self._table(path).symbols():
                    out.setdefault(sym, path)
            elif self._single:
                out[self.symbol or path.stem.upper()] = path
            else:
                out.setdefault(path.stem.upper(), path)
        return out

    def available_symbols(self, interval: str | None = None) -> list[str]:
        index = self._index()
        if interval is None:
            return list(index)
        return [s for s, p in index.items() if self._interval(p) == interval]

    def _interval(self, path: Path) -> str | None:
        try:
            table = self._table(path)
        except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError):
            return None  # listed for no interval; fetching it says why
        return _interval_of(table.times.wall)

    def note(self, symbol: str) -> str | None:
        return self._notes.get(symbol)

    def raw_bars(
        self,
        symbol: str,
        *,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        interval: str,
        **kw: Any,
    ) -> pd.DataFrame:
        try:
            index = self._index()
        except (CsvFormatError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SourceError(self.name, symbol, f"cannot be read: {exc}") from exc
        path = index.get(symbol)
        if path is None:
            raise SourceError(self.name, symbol, self._not_found(index))
        try:
            table = self._table(path)
            bars, skipped = table_bars(
                table,
                interval=interval,
                tz=self.tz,
                symbol=symbol if table.has_symbols else None,
                errors=self.errors,
            )
        except CsvFormatError as exc:
            raise SourceError(self.name, symbol, f"{path.name}: {exc}") from exc
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise SourceError(self.name, symbol, f"{path.name} cannot be read: {exc}") from exc
        if skipped:
            shown = "; ".join(f"row {r}: {why}" for r, why in skipped[:3])
            more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
            self._notes[symbol] = (
                f"{path.name}: skipped {len(skipped)} of {len(bars) + len(skipped)} rows "
                f"that cannot be read: {shown}{more}"
            )
        return bars

    def _not_found(self, index: dict[str, Path]) -> str:
        where = self.pattern or str(self.path)
        if self._single and len(index) == 1 and not self._has_symbol_column(self.path):
            [name] = index
            return (
                f"{self.path.name} holds one symbol's bars, read as {name}; to read it as "
                "another symbol, ask for that one symbol alone (symbols='IBM') or pass symbol="
            )
        holds = f" (holds: {', '.join(index)})" if index else " (no CSV files)"
        return f"no CSV for this symbol in {where}{holds}"
