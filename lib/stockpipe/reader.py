"""Read the lake with pyarrow/pandas, outside Spark: committed rows only.

Streaming zones (ticks): a file sink leaves the files of a micro-batch that never
committed (a killed query) on storage; only the sink's commit log
(``_spark_metadata``) says which files are real. Bar zones: managed tables whose
manifest names the committed files (``stockpipe.table``). Either way these
readers open exactly the committed files, so a pandas user sees the same rows as
Spark: none doubled, none half-written.
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
from stockpipe.lake import filesystem, zone
from stockpipe.schemas import BAR_ARROW_SCHEMA, DERIVED_COLUMNS
from stockpipe.sinklog import committed_files
from stockpipe.table import Table

TICK_WINDOWS_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("vwap", pa.float64()),
        ("volume", pa.int64()),
        ("trade_count", pa.int64()),
        ("price_std", pa.float64()),
        ("date", pa.date32()),
    ]
)


def sink_files(settings: Settings, zone_name: str) -> list[str]:
    """Data files of a streaming sink zone that its commit log names (no scheme).

    A zone with no commit log yet has no committed rows: the empty list.
    """
    fs = filesystem(settings)
    files = committed_files(fs, zone(settings, zone_name))
    return [f for f in (files or []) if f.endswith(".parquet")]


def _read(
    settings: Settings, zone_name: str, schema: pa.Schema, filt: ds.Expression | None
) -> pd.DataFrame:
    files = sink_files(settings, zone_name)
    if not files:
        return schema.empty_table().to_pandas()
    root = zone(settings, zone_name)
    dataset = ds.dataset(
        files,
        schema=schema,
        filesystem=filesystem(settings),
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([f for f in schema if f.name in ("date", "ingest_date")]), flavor="hive"
        ),
        partition_base_dir=root,
    )
    return dataset.to_table(filter=filt).to_pandas()


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_tick_windows(
    settings: Settings,
    start: Any = None,
    end: Any = None,
    symbols: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Committed sliding-window aggregates, sorted by symbol and window start.

    ``start`` (inclusive) and ``end`` (exclusive) bound ``window_start``; a naive
    time is read as UTC.
    """
    filt = None
    conds = []
    if start is not None:
        conds.append(ds.field("window_start") >= pa.scalar(_utc(start), pa.timestamp("us", "UTC")))
    if end is not None:
        conds.append(ds.field("window_start") < pa.scalar(_utc(end), pa.timestamp("us", "UTC")))
    if symbols is not None:
        conds.append(ds.field("symbol").isin([s.upper() for s in symbols]))
    for c in conds:
        filt = c if filt is None else filt & c
    df = _read(settings, "tick_windows", TICK_WINDOWS_SCHEMA, filt)
    return df.sort_values(["symbol", "window_start", "window_end"]).reset_index(drop=True)


QUARANTINE_TICKS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("value", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("ingest_date", pa.date32()),
    ]
)

RAW_TICKS_SCHEMA = pa.schema([f for f in QUARANTINE_TICKS_SCHEMA if f.name != "reason"])


#: One row per micro-batch of a streaming query (written by the streaming job).
METRICS_SCHEMA = pa.schema(
    [
        ("query_name", pa.string()),
        ("query_id", pa.string()),
        ("run_id", pa.string()),
        ("batch_id", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("num_input_rows", pa.int64()),
        ("input_rows_per_second", pa.float64()),
        ("processed_rows_per_second", pa.float64()),
        ("batch_duration_ms", pa.int64()),
        ("watermark", pa.timestamp("ms", tz="UTC")),
        ("state_rows", pa.int64()),
        ("state_memory_bytes", pa.int64()),
        ("late_rows_dropped", pa.int64()),
    ]
)


def read_quarantined_ticks(settings: Settings) -> pd.DataFrame:
    """Committed quarantined ticks with their reason, in Kafka order."""
    df = _read(settings, "quarantine_ticks", QUARANTINE_TICKS_SCHEMA, None)
    return df.sort_values(["topic", "partition", "offset"]).reset_index(drop=True)


def read_raw_ticks(settings: Settings) -> pd.DataFrame:
    """Committed raw tick records as received, in Kafka order."""
    df = _read(settings, "raw_ticks", RAW_TICKS_SCHEMA, None)
    return df.sort_values(["topic", "partition", "offset"]).reset_index(drop=True)


def read_stream_metrics(settings: Settings, query_name: str | None = None) -> pd.DataFrame:
    """Per-micro-batch progress rows of the streaming queries, in time order."""
    fs = filesystem(settings)
    root = zone(settings, "stream_metrics")
    pattern = f"{root}/{query_name or '*'}/*.parquet"
    files = sorted(fs.glob(pattern))
    if not files:
        return METRICS_SCHEMA.empty_table().to_pandas()
    table = ds.dataset(files, schema=METRICS_SCHEMA, filesystem=fs, format="parquet").to_table()
    df = table.to_pandas()
    return df.sort_values(["query_name", "batch_id"]).reset_index(drop=True)


# Bars: managed tables read through their manifest ----------------------------------------

DateLike = str | date | datetime | pd.Timestamp | None

#: Columns of processed bars, for empty results.
PROCESSED_SCHEMA = BAR_ARROW_SCHEMA.append(pa.field("return", pa.float64()))
for _name in DERIVED_COLUMNS[1:]:
    PROCESSED_SCHEMA = PROCESSED_SCHEMA.append(pa.field(_name, pa.float64()))
PROCESSED_SCHEMA = PROCESSED_SCHEMA.append(pa.field("year", pa.int32()))


class LastRead:
    """Which files the last read opened (for tests and for the curious)."""

    files: list[str] = []  # noqa: RUF012


def _ts(value: DateLike, *, end: bool = False) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if (
        end
        and isinstance(value, str | date)
        and not isinstance(value, datetime)
        and len(str(value)) <= 10
    ):
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)  # a date's end is inclusive
    return ts


def _symbols(symbols: list[str] | str | None) -> list[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",")]
    out = [s.strip().upper() for s in symbols if s and s.strip()]
    return out or None


def _read_files(
    files: list[str],
    settings: Settings,
    base_dir: str,
    schema: pa.Schema | None,
    filt: Any,
    partitioning: ds.Partitioning | str | None = "hive",
) -> pa.Table:
    LastRead.files = list(files)
    if not files:
        return schema.empty_table() if schema is not None else pa.table({})
    dataset = ds.dataset(
        files,
        filesystem=filesystem(settings),
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=base_dir,
    )
    table = dataset.to_table(filter=filt)
    return table


def _to_pandas(table: pa.Table, schema: pa.Schema | None = None) -> pd.DataFrame:
    if schema is not None:
        cols = [f.name for f in schema if f.name in table.column_names]
        table = table.select(cols)
    return table.to_pandas(types_mapper=None)


# processed bars ----------------------------------------------------------------------------


def bar_files(
    settings: Settings,
    symbols: list[str] | str | None = None,
    start: DateLike = None,
    end: DateLike = None,
    interval: str | None = "1d",
) -> list[str]:
    """The processed files that can hold the requested bars (partition pruning)."""
    table = Table(settings, "processed_bars")
    lo, hi = _ts(start), _ts(end, end=True)
    manifest = table.manifest()
    years = None
    if lo is not None or hi is not None:
        have = {int(p.split("year=")[1]) for p in manifest.partitions or {} if "year=" in p}
        years = [y for y in have if (lo is None or y >= lo.year) and (hi is None or y <= hi.year)]
    return table.files(manifest, interval=interval, year=years)


def read_bars(
    settings: Settings,
    symbols: list[str] | str | None = None,
    start: DateLike = None,
    end: DateLike = None,
    interval: str | None = "1d",
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Processed bars for ``symbols`` (all when None) with ``start <= ts <= end``.

    Sorted by symbol, ts. Unknown symbols give an empty frame and a warning.
    """
    syms = _symbols(symbols)
    lo, hi = _ts(start), _ts(end, end=True)
    files = bar_files(settings, syms, start, end, interval)
    filt = None
    conds = []
    if syms:
        conds.append(ds.field("symbol").isin(syms))
    if lo is not None:
        conds.append(ds.field("ts") >= pa.scalar(lo.to_pydatetime(), pa.timestamp("us", "UTC")))
    if hi is not None:
        conds.append(ds.field("ts") <= pa.scalar(hi.to_pydatetime(), pa.timestamp("us", "UTC")))
    for c in conds:
        filt = c if filt is None else filt & c
    part = ds.partitioning(
        pa.schema([("run", pa.string()), ("interval", pa.string()), ("year", pa.int32())]),
        flavor="hive",
    )
    table = _read_files(
        files, settings, zone(settings, "processed_bars"), PROCESSED_SCHEMA, filt, part
    )
    df = _to_pandas(table, PROCESSED_SCHEMA)
    if columns:
        df = df.loc[:, columns]
    if syms:
        missing = sorted(set(syms) - set(df["symbol"].unique())) if len(df) else syms
        if missing:
            warnings.warn(
                f"no processed bars for {', '.join(missing)} in the requested range",
                stacklevel=2,
            )
    if df.empty:
        return PROCESSED_SCHEMA.empty_table().to_pandas() if not columns else df
    return df.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


# raw and quarantine of bars ---------------------------------------------------------------


def _read_managed(settings: Settings, zone_name: str, **filters: Any) -> pd.DataFrame:
    table = Table(settings, zone_name)
    files = table.files(**filters)
    if not files:
        LastRead.files = []
        return pd.DataFrame()
    return _to_pandas(_read_files(files, settings, table.root, None, None, "hive"))


def read_raw_bars(settings: Settings, ingest_date: DateLike = None) -> pd.DataFrame:
    """Raw Kafka records of the bar topic as received (committed batches only)."""
    filters = {"ingest_date": str(pd.Timestamp(ingest_date).date())} if ingest_date else {}
    return _read_managed(settings, "raw_bars", **filters)


def read_quarantine(settings: Settings, kind: str = "bars") -> pd.DataFrame:
    """Quarantined records with their reasons (``kind``: bars or ticks)."""
    if kind == "bars":
        return _read_managed(settings, "quarantine_bars")
    return read_quarantined_ticks(settings)


# Summary -------------------------------------------------------------------------------


def zone_counts(settings: Settings) -> pd.DataFrame:
    """Rows in each zone of the lake (for the demo summary)."""
    rows = []
    for name in ("raw_bars", "processed_bars", "quarantine_bars"):
        m = Table(settings, name).manifest()
        rows.append((zone(settings, name), m.rows))
    fs = filesystem(settings)
    for name in ("raw_ticks", "tick_windows", "quarantine_ticks"):
        root = zone(settings, name)
        files = committed_files(fs, root) or []
        n = 0
        if files:
            n = ds.dataset(
                [f for f in files if f.endswith(".parquet")], filesystem=fs, format="parquet"
            ).count_rows()
        rows.append((root, n))
    return pd.DataFrame(rows, columns=["zone", "rows"])
