"""Read the lake outside Spark, through ``deltalake``: committed rows only.

Every zone is a Delta table, so a reader sees one committed version, never a
half-written micro-batch or the files of a failed run. Filters are pushed down
to the files: partition values prune whole files, and the log's per-file
statistics (min/max of ``symbol``, ``ts``, ...) skip the files that cannot match.
Any version can be read again (``version=`` or ``as_of=``), as long as VACUUM
has kept its files (7 days by default).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from stockpipe.config import Settings
from stockpipe.lake import zone
from stockpipe.schemas import (
    METRICS_SCHEMA,
    PROCESSED_SCHEMA,
    QUARANTINE_BARS_SCHEMA,
    QUARANTINE_TICKS_SCHEMA,
    RAW_SCHEMA,
    TICK_WINDOWS_SCHEMA,
)
from stockpipe.tables import open_table, row_count
from stockpipe.times import TimeLike, to_utc


class LastRead:
    """Which data files the last read opened (for tests and for the curious)."""

    files: list[str] = []  # noqa: RUF012


def read_table(
    settings: Settings,
    name: str,
    filt: ds.Expression | None = None,
    *,
    rows: ds.Expression | None = None,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
    version: int | None = None,
    as_of: datetime | str | None = None,
) -> pa.Table:
    """One zone's rows matching ``filt`` and ``rows`` as Arrow; ``schema``'s empty table
    if none exist.

    ``filt`` prunes files (partitions, timestamps, numbers); ``rows`` holds the
    conditions on string columns, applied after the read: pyarrow cannot compare a
    string with the statistics of a file that stores it as ``string_view`` (files
    other writers make: deltalake's MERGE and DELETE, polars).
    """
    dt = open_table(settings, name, version=version, as_of=as_of)
    if dt is None:
        LastRead.files = []
        empty = schema.empty_table() if schema is not None else pa.table({})
        return empty.select(columns) if columns and schema is not None else empty
    dataset = dt.to_pyarrow_dataset()
    fragments = list(dataset.get_fragments(filter=filt))
    LastRead.files = sorted(f.path for f in fragments)
    if rows is None:
        return dataset.to_table(filter=filt, columns=columns)
    table = dataset.to_table(filter=filt).filter(rows)
    return table.select(columns) if columns else table


def _ts(value: TimeLike, *, end: bool = False) -> pd.Timestamp | None:
    """A bound as a UTC instant; a plain date as ``end`` means the end of that day."""
    ts = to_utc(value, parameter="end" if end else "start")
    if ts is None:
        return None
    is_date = isinstance(value, date) and not isinstance(value, datetime)
    if end and (is_date or (isinstance(value, str) and len(value) <= 10)):
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    return ts


def _scalar(ts: pd.Timestamp) -> pa.Scalar:
    return pa.scalar(ts.to_pydatetime(), pa.timestamp("us", "UTC"))


def _all(conditions: Iterable[ds.Expression]) -> ds.Expression | None:
    out = None
    for c in conditions:
        out = c if out is None else out & c
    return out


def _symbols(symbols: list[str] | str | None) -> list[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        symbols = symbols.split(",")
    out = [s.strip().upper() for s in symbols if s and s.strip()]
    return out or None


def _frame(table: pa.Table, sort: list[str]) -> pd.DataFrame:
    df = table.to_pandas()
    return df.sort_values(sort, kind="stable").reset_index(drop=True) if len(df) else df


# processed bars ----------------------------------------------------------------------------


def bars_filter(start: TimeLike, end: TimeLike, interval: str | None) -> ds.Expression | None:
    """The file filter of a bars query: partition columns first, so whole files are pruned."""
    lo, hi = _ts(start), _ts(end, end=True)
    conds = []
    if interval:
        conds.append(ds.field("interval") == interval)
    if lo is not None:
        conds += [ds.field("year") >= lo.year, ds.field("ts") >= _scalar(lo)]
    if hi is not None:
        conds += [ds.field("year") <= hi.year, ds.field("ts") <= _scalar(hi)]
    return _all(conds)


def _of_symbols(symbols: Iterable[str] | None) -> ds.Expression | None:
    return None if symbols is None else ds.field("symbol").isin(list(symbols))


def read_bars(
    settings: Settings,
    symbols: list[str] | str | None = None,
    start: TimeLike = None,
    end: TimeLike = None,
    interval: str | None = "1d",
    columns: list[str] | None = None,
    *,
    version: int | None = None,
    as_of: datetime | str | None = None,
) -> pd.DataFrame:
    """Processed bars for ``symbols`` (all when None) with ``start <= ts <= end``.

    Sorted by symbol, ts. Unknown symbols give an empty frame and a warning.
    """
    syms = _symbols(symbols)
    filt = bars_filter(start, end, interval)
    table = read_table(
        settings,
        "processed_bars",
        filt,
        rows=_of_symbols(syms),
        schema=PROCESSED_SCHEMA,
        version=version,
        as_of=as_of,
    )
    names = [f.name for f in PROCESSED_SCHEMA if f.name in table.column_names]
    df = _frame(table.select(names), ["symbol", "ts"])
    if syms:
        missing = sorted(set(syms) - set(df["symbol"].unique())) if len(df) else syms
        if missing:
            warnings.warn(
                f"no processed bars for {', '.join(missing)} in the requested range",
                stacklevel=2,
            )
    return df.loc[:, columns] if columns else df


# raw and quarantine ------------------------------------------------------------------------


def read_raw_bars(
    settings: Settings, ingest_date: TimeLike = None, *, version: int | None = None
) -> pd.DataFrame:
    """Raw Kafka records of the bar topic as received, in Kafka order."""
    filt = None
    if ingest_date:
        filt = ds.field("ingest_date") == pa.scalar(pd.Timestamp(ingest_date).date(), pa.date32())
    return _frame(
        read_table(settings, "raw_bars", filt, schema=RAW_SCHEMA, version=version),
        ["topic", "partition", "offset"],
    )


def read_quarantine(settings: Settings, kind: str = "bars") -> pd.DataFrame:
    """Quarantined records with their reasons (``kind``: bars or ticks), in Kafka order."""
    if kind == "ticks":
        return read_quarantined_ticks(settings)
    table = read_table(settings, "quarantine_bars", schema=QUARANTINE_BARS_SCHEMA)
    return _frame(table, ["topic", "partition", "offset"])


def read_quarantined_ticks(settings: Settings) -> pd.DataFrame:
    """Quarantined ticks with their reason, in Kafka order."""
    table = read_table(settings, "quarantine_ticks", schema=QUARANTINE_TICKS_SCHEMA)
    return _frame(table, ["topic", "partition", "offset"])


def read_raw_ticks(settings: Settings) -> pd.DataFrame:
    """Raw tick records as received, in Kafka order."""
    table = read_table(settings, "raw_ticks", schema=RAW_SCHEMA)
    return _frame(table, ["topic", "partition", "offset"])


# streaming outputs -------------------------------------------------------------------------


def read_tick_windows(
    settings: Settings,
    start: Any = None,
    end: Any = None,
    symbols: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Sliding-window aggregates, sorted by symbol and window start.

    ``start`` (inclusive) and ``end`` (exclusive) bound ``window_start``; a naive
    time is read as UTC.
    """
    conds = []
    if (lo := to_utc(start, parameter="start")) is not None:
        conds += [ds.field("date") >= pa.scalar(lo.date(), pa.date32())]
        conds += [ds.field("window_start") >= _scalar(lo)]
    if (hi := to_utc(end, parameter="end")) is not None:
        conds += [ds.field("date") <= pa.scalar(hi.date(), pa.date32())]
        conds += [ds.field("window_start") < _scalar(hi)]
    syms = None if symbols is None else [s.upper() for s in symbols]
    table = read_table(
        settings, "tick_windows", _all(conds), rows=_of_symbols(syms), schema=TICK_WINDOWS_SCHEMA
    )
    return _frame(table, ["symbol", "window_start", "window_end"])


def read_stream_metrics(settings: Settings, query_name: str | None = None) -> pd.DataFrame:
    """Per-micro-batch progress rows of the streaming queries, in time order.

    A batch Spark ran twice (a restart replays the last one) keeps its latest run.
    """
    keep = ds.field("query_name") == query_name if query_name else None
    table = read_table(settings, "stream_metrics", rows=keep, schema=METRICS_SCHEMA)
    df = table.select(METRICS_SCHEMA.names).to_pandas()
    if df.empty:
        return df
    df = df.sort_values(["query_name", "batch_id", "timestamp"], kind="stable")
    df = df.drop_duplicates(["query_id", "batch_id"], keep="last")
    return df.reset_index(drop=True)


# Summary -------------------------------------------------------------------------------


def zone_counts(settings: Settings) -> pd.DataFrame:
    """Rows in each table of the lake, from the Delta logs (no data read)."""
    names = ("raw_bars", "processed_bars", "quarantine_bars", "raw_ticks", "tick_windows")
    rows = [(zone(settings, n), row_count(settings, n)) for n in (*names, "quarantine_ticks")]
    return pd.DataFrame(rows, columns=["zone", "rows"])
