"""Read the lake's streaming tables with pyarrow/pandas, outside Spark.

A streaming file sink leaves the files of a micro-batch that never committed (a
killed query) on storage; only the sink's commit log (``_spark_metadata``) says
which files are real. These readers open exactly the committed files, so a
pandas user sees the same rows as Spark: none doubled, none half-written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from stockpipe.config import Settings
from stockpipe.lake import filesystem, zone
from stockpipe.sinklog import committed_files

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
