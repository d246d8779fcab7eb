"""Instants and durations: one UTC conversion and one interval length for every module.

Every time the project stores or compares is a UTC instant; a naive time is read
as UTC (never as the machine's local zone), an aware one is converted.
"""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd

from stockpipe.errors import ParameterError

TimeLike = str | date | datetime | pd.Timestamp | None


def to_utc(value: TimeLike, *, parameter: str = "time") -> pd.Timestamp | None:
    """``value`` as a UTC timestamp: a date is 00:00 UTC, naive is UTC; None or blank
    text gives None, anything that names no time raises :class:`ParameterError`
    naming ``parameter``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        ts = pd.NaT
    if pd.isna(ts):
        raise ParameterError(parameter, value, "a date or time", use="ISO 8601, e.g. 2024-01-31")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_window(start: TimeLike, end: TimeLike) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``[start, end)`` as UTC timestamps (None: open); an ``end`` not after ``start``
    is a :class:`ParameterError`."""
    lo, hi = to_utc(start, parameter="start"), to_utc(end, parameter="end")
    if lo is not None and hi is not None and lo >= hi:
        raise ParameterError("end", str(end), f"after start {str(start)!r}")
    return lo, hi


def to_ms(interval: str | int | float | pd.Timedelta) -> int:
    """Milliseconds of an interval ("15 seconds", "1 minute", a Timedelta, or ms)."""
    if isinstance(interval, int | float):
        return int(interval)
    return int(pd.Timedelta(interval).total_seconds() * 1000)
