"""The time column of a price CSV: which layout it is written in, and what it says.

Exporters write times every way there is. The layouts tried, each on every row:

* ISO 8601 dates and datetimes (``2024-01-02``, ``2024-01-02 09:30:00``, ``...T09:30Z``);
* numeric dates with ``/``, ``-`` or ``.``: month first (US, ``1/4/1999``), day first
  (``04.01.1999``) or year first (``1999/01/04``), two- or four-digit years, then an
  optional ``HH:MM[:SS]`` (24 h, or 12 h with AM/PM);
* month names in English (``Jan 04, 1999``, ``04-Jan-1999``, ``4 January 1999``);
* ``YYYYMMDD`` (Stooq), with an optional ``HHMMSS`` or ``HH:MM:SS``;
* epoch seconds, milliseconds, microseconds or nanoseconds (told apart by digit count).

A time may end with its zone: ``Z``, ``UTC``, ``GMT``, an offset (``-04:00``, ``+0530``),
an IANA name (``America/New_York``) or a US abbreviation (``EST``, ``EDT``, ...). Other
times are naive and read in the caller's time zone.

Month-first and day-first dates are told apart by a day above 12. A file without one
is ambiguous: it is refused with a message naming ``dayfirst`` and ``date_format``,
never guessed. A row that no layout reads is reported with its row number and the
layouts tried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stockpipe.errors import CsvFormatError


@dataclass(frozen=True)
class Layout:
    """One way of writing times: a pandas/strptime format and the order of its date fields."""

    name: str
    fmt: str  # a strptime format, "ISO8601", or "epoch"
    order: str  # "iso", "mdy", "dmy", "ymd", "text", "epoch"

    def __str__(self) -> str:
        return self.name


_CLOCKS = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %I:%M %p", " %I:%M:%S %p")
_NUMERIC_DATES = {
    "mdy": ("%m/%d/%Y", "%m/%d/%y", "%m-%d-%Y", "%m.%d.%Y"),
    "dmy": ("%d/%m/%Y", "%d/%m/%y", "%d.%m.%Y", "%d.%m.%y", "%d-%m-%Y"),
    "ymd": ("%Y/%m/%d", "%Y.%m.%d"),
    "text": ("%b %d, %Y", "%B %d, %Y", "%d-%b-%Y", "%d-%b-%y", "%d %b %Y", "%d %B %Y", "%b %d %Y"),
}
_ORDER_NAMES = {
    "mdy": "month first",
    "dmy": "day first",
    "ymd": "year first",
    "text": "month name",
}

#: Every layout tried when the caller names none, in the order ties are settled.
LAYOUTS: tuple[Layout, ...] = (
    Layout("ISO 8601", "ISO8601", "iso"),
    *(
        Layout(f"{_ORDER_NAMES[order]} {date}{clock}", f"{date}{clock}", order)
        for order, dates in _NUMERIC_DATES.items()
        for date in dates
        for clock in _CLOCKS
    ),
    Layout("YYYYMMDD", "%Y%m%d", "ymd"),
    Layout("YYYYMMDD HHMMSS", "%Y%m%d %H%M%S", "ymd"),
    Layout("YYYYMMDD HH:MM:SS", "%Y%m%d %H:%M:%S", "ymd"),
)
EPOCH = Layout("epoch", "epoch", "epoch")
#: Epoch units by the number of digits before any fraction.
_EPOCH_UNITS = {range(9, 11): "s", range(11, 14): "ms", range(14, 17): "us", range(17, 20): "ns"}

#: US zone abbreviations (the only ones exporters commonly write that mean one thing).
_ABBREVIATIONS = {
    "EST": -300,
    "EDT": -240,
    "CST": -360,
    "CDT": -300,
    "MST": -420,
    "MDT": -360,
    "PST": -480,
    "PDT": -420,
}
# A zone is split off only after a clock time, so "12-31-1999" never loses "-1999".
_ZONE_RE = re.compile(
    r"^(?P<wall>.*\d:\d\d(?::\d\d(?:\.\d+)?)?(?:\s*[AaPp][Mm]\b)?)\s*"
    r"(?P<zone>Z|UTC|GMT|[+-]\d\d:?\d\d|[A-Za-z]+/[A-Za-z_+\-/]+|[ECMP][SD]T)$"
)
_OFFSET_RE = re.compile(r"^([+-])(\d\d):?(\d\d)$")
_DIGITS_RE = re.compile(r"^\d+(?:\.\d+)?$")
#: Rows parsed first to narrow the layouts down (the survivors then parse every row).
_SAMPLE = 400


@dataclass
class ParsedTimes:
    """What a time column holds, row by row (the column's index is kept)."""

    layout: Layout
    #: Wall-clock times as written (epochs: the instant in ``tz``); NaT where unreadable.
    wall: pd.Series
    #: UTC instants; NaT where unreadable, and for naive times (see :attr:`naive`).
    utc: pd.Series
    #: Rows written without a zone (to be read in a time zone).
    naive: pd.Series
    #: Unreadable rows: index -> reason.
    bad: dict[int, str] = field(default_factory=dict)


def parse_times(
    stamps: pd.Series,
    *,
    tz: str = "UTC",
    date_format: str | None = None,
    dayfirst: bool | None = None,
) -> ParsedTimes:
    """Detect the layout of ``stamps`` (or use ``date_format``) and read every row.

    Raises :class:`CsvFormatError` when month-first and day-first both read every
    row (ambiguous) and neither ``dayfirst`` nor ``date_format`` says which.
    Unreadable rows are returned in :attr:`ParsedTimes.bad`, not raised.
    """
    text = stamps.astype("string").fillna("").str.strip()
    empty = text == ""
    filled = text[~empty]
    if filled.empty:
        raise CsvFormatError("the time column is empty")
    numeric = date_format is None and bool(filled.str.match(_DIGITS_RE).all())
    # eight digits are a Stooq date (19990104) when every row reads as one
    if numeric and (~(filled.str.len() == 8).all() or _parse(filled, "%Y%m%d").isna().any()):
        return _epochs(text, empty, tz)
    clocked = text.str.contains(":", regex=False)  # a zone follows a clock time only
    zone_split = pd.DataFrame({"wall": pd.Series(None, index=text.index, dtype="string")})
    zone_split["zone"] = zone_split["wall"]
    if clocked.any():
        zone_split.loc[clocked] = text[clocked].str.extract(_ZONE_RE).to_numpy()
    has_zone = zone_split["zone"].notna()
    wall_text = text.where(~has_zone, zone_split["wall"].str.strip())
    layout, wall = _best_layout(wall_text[~empty], date_format, dayfirst)
    wall = wall.reindex(text.index)
    tried = date_format or _tried(dayfirst)
    bad = {int(i): "empty time" for i in text.index[empty]}
    for i in wall.index[wall.isna() & ~empty]:
        bad[int(i)] = f"time {text[i]!r} does not parse as {layout} (layouts tried: {tried})"
    utc = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for zone, rows in zone_split.loc[has_zone & wall.notna(), "zone"].groupby(zone_split["zone"]):
        idx = rows.index
        try:
            utc.loc[idx] = _to_utc(wall.loc[idx], str(zone))
        except (ValueError, KeyError) as exc:
            for i in idx:
                bad[int(i)] = f"time {text[i]!r}: unknown time zone {zone!r} ({exc})"
            continue
        for i in idx[utc.loc[idx].isna()]:
            bad[int(i)] = f"time {text[i]!r} does not exist or is ambiguous in {zone} (DST)"
    return ParsedTimes(layout=layout, wall=wall, utc=utc, naive=~has_zone, bad=bad)


def _parse(text: pd.Series, fmt: str) -> pd.Series:
    return pd.to_datetime(text, format=fmt, errors="coerce")


def _tried(dayfirst: bool | None) -> str:
    kinds = ["ISO 8601", "YYYYMMDD", "epoch s/ms/us/ns", "month names"]
    if dayfirst is not True:
        kinds.append("month-first M/D/Y")
    if dayfirst is not False:
        kinds.append("day-first D/M/Y")
    return ", ".join([*kinds, "year-first Y/M/D", "each with optional HH:MM[:SS][ AM|PM]"])


def _candidates(date_format: str | None, dayfirst: bool | None) -> list[Layout]:
    if date_format:
        return [Layout(f"date_format {date_format!r}", date_format, "given")]
    skip = {True: "mdy", False: "dmy", None: ""}[dayfirst]
    return [lay for lay in LAYOUTS if lay.order != skip]


def _best_layout(
    text: pd.Series, date_format: str | None, dayfirst: bool | None
) -> tuple[Layout, pd.Series]:
    """The layout that reads the most rows; ambiguity between M/D and D/M is an error."""
    candidates = _candidates(date_format, dayfirst)
    if len(candidates) > 1 and len(text) > _SAMPLE:
        # a cheap first pass: spread rows, so a day above 12 is likely among them
        pick = np.unique(np.linspace(0, len(text) - 1, _SAMPLE).astype(int))
        sample = text.iloc[pick]
        counts = [int(_parse(sample, lay.fmt).notna().sum()) for lay in candidates]
        top = max(counts)
        candidates = [lay for lay, n in zip(candidates, counts, strict=True) if n >= top - 1]
    parsed = [(lay, _parse(text, lay.fmt)) for lay in candidates]
    counts = [int(p.notna().sum()) for _, p in parsed]
    best = max(counts)
    winners = [lay for (lay, _), n in zip(parsed, counts, strict=True) if n == best]
    orders = {lay.order for lay in winners}
    if best and {"mdy", "dmy"} <= orders:
        mdy = next(lay for lay in winners if lay.order == "mdy")
        dmy = next(lay for lay in winners if lay.order == "dmy")
        example = text.iloc[0]
        raise CsvFormatError(
            f"ambiguous dates: {example!r} reads as month first ({mdy.fmt}) and as day first "
            f"({dmy.fmt}), and no day in the file is above 12; say which with "
            f"dayfirst=False (US, month first) or dayfirst=True, or date_format={mdy.fmt!r}"
        )
    index = counts.index(best)
    return parsed[index]


def _epochs(text: pd.Series, empty: pd.Series, tz: str) -> ParsedTimes:
    """Epoch numbers as UTC instants; the unit follows the most common digit count."""
    digits = text.str.split(".").str[0].str.len()
    units = pd.Series(None, index=text.index, dtype="object")
    for span, unit in _EPOCH_UNITS.items():
        units[digits.isin(list(span))] = unit
    unit = units[~empty].mode()
    if unit.empty:
        raise CsvFormatError(
            f"time {text[~empty].iloc[0]!r} is a number but not epoch seconds, milliseconds, "
            "microseconds or nanoseconds (9 to 19 digits)"
        )
    chosen = str(unit.iloc[0])
    ok = (units == chosen) & ~empty
    utc = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    utc[ok] = pd.to_datetime(text[ok].astype(float), unit=chosen, utc=True)
    bad = {int(i): "empty time" for i in text.index[empty]}
    for i in text.index[~ok & ~empty]:
        bad[int(i)] = f"time {text[i]!r} is not epoch {chosen} like the other rows"
    wall = utc.dt.tz_convert(tz).dt.tz_localize(None)
    naive = pd.Series(False, index=text.index)
    return ParsedTimes(layout=EPOCH, wall=wall, utc=utc, naive=naive, bad=bad)


def _to_utc(wall: pd.Series, zone: str) -> pd.Series:
    """Wall-clock times written with ``zone`` as UTC instants."""
    if zone in ("Z", "UTC", "GMT"):
        return wall.dt.tz_localize("UTC")
    minutes = _ABBREVIATIONS.get(zone)
    offset = _OFFSET_RE.match(zone)
    if offset:
        sign, hh, mm = offset.groups()
        minutes = (int(hh) * 60 + int(mm)) * (-1 if sign == "-" else 1)
    if minutes is not None:
        return (wall - pd.Timedelta(minutes=minutes)).dt.tz_localize("UTC")
    return wall.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
