"""Instants and durations: one UTC conversion and one interval length for every module.

Every time the project stores or compares is a UTC instant; a naive time is read
as UTC (never as the machine's local zone), an aware one is converted.
"""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd

TimeLike = str | date | datetime | pd.Timestamp | None


def to_utc(value: TimeLike) -> pd.Timestamp | None:
    """``value`` as a UTC timestamp: a date is 00:00 UTC, naive is UTC; None or blank
    text gives None, text that names no time raises ValueError."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        raise ValueError(f"not a date or time: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_ms(interval: str | int | float | pd.Timedelta) -> int:
    """Milliseconds of an interval ("15 seconds", "1 minute", a Timedelta, or ms)."""
    if isinstance(interval, int | float):
        return int(interval)
    return int(pd.Timedelta(interval).total_seconds() * 1000)
