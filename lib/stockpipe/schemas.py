"""The data contracts: bars, ticks and the lake's tables, in one place.

Kafka messages are UTF-8 JSON. Bars carry ``ts`` and ``ingested_at`` as ISO-8601
UTC strings (``2024-01-02T14:30:00.000Z``); ticks carry ``ts`` as epoch
milliseconds. Every message has ``schema_version`` so consumers can evolve.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # the Spark jobs read these contracts and never touch pandas
    import pandas as pd

SCHEMA_VERSION = 1

INTERVALS: tuple[str, ...] = ("1d", "1h", "5m", "1m")
SOURCES: tuple[str, ...] = ("yahoo", "alphavantage", "csv", "samples", "synthetic")
#: Where ticks come from: the seeded generator, or a live feed (``stockpipe.live``).
TICK_SOURCES: tuple[str, ...] = ("synthetic", "yahoo", "finnhub")

# Validation bounds, shared by the bar and tick jobs ------------------------------------
# A record outside them is quarantined with the reason code named beside each bound.

#: Earliest bar time (``early_ts``): exchange histories start in the 1920s (Yahoo's
#: ^GSPC in 1927); a year-1 bar would make the job rewrite every year partition since.
#: Ticks are live, so theirs is the epoch (epoch milliseconds above 0).
MIN_BAR_TS = datetime(1900, 1, 1, tzinfo=UTC)
#: How far ``ts`` (and a bar's ``ingested_at``) may lie after Kafka's receipt of the
#: record (``future_ts``, ``future_ingested_at``): producer clocks are not exact. Ticks
#: are bounded by the watermark delay as well (``tick_transforms.future_tolerance``).
FUTURE_SKEW_S = 300
#: Largest price (``price_too_large``): above any listed share or index in any currency,
#: and small enough that the running sums behind the windows keep their precision.
MAX_PRICE = 1e9
#: Largest bar volume (``volume_too_large``): a day of the most traded penny stock is
#: far below it, and window sums of it stay exact in a 64-bit integer.
MAX_VOLUME = 10**15
#: Largest tick size (``size_too_large``).
MAX_TICK_SIZE = 10**9
#: What a symbol may hold (``bad_symbol``): exchange tickers, Yahoo's index, currency
#: and futures forms (^GSPC, EURUSD=X, ES=F, BRK-B, 0700.HK, M&M.NS) and share classes.
SYMBOL_CHARS = r"A-Za-z0-9.^=&_/-"
MAX_SYMBOL_LENGTH = 32
SYMBOL_PATTERN = rf"^[{SYMBOL_CHARS}]{{1,{MAX_SYMBOL_LENGTH}}}$"
#: Largest record value in bytes (``record_too_large``): a bar or tick message is a few
#: hundred bytes; a larger value is kept in raw and quarantine but never parsed.
MAX_RECORD_BYTES = 64 * 1024

#: Canonical bar columns, in order, as every source returns them.
BAR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "interval",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "adj_close",
    "volume",
    "source",
    "ingested_at",
    "batch_id",
)
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

#: Spark DDL of a bar message value (timestamps arrive as strings, parsed as UTC).
BAR_MESSAGE_DDL = (
    "schema_version INT, symbol STRING, interval STRING, ts STRING, "
    "open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, adj_close DOUBLE, "
    "volume LONG, source STRING, ingested_at STRING, batch_id STRING"
)

#: One bar per key in processed/.
BAR_KEY: tuple[str, ...] = ("symbol", "interval", "ts")

#: Tick contract. A live feed's ticks may also carry TICK_OPTIONAL_FIELDS (the streaming
#: job reads the contract's fields; raw/ticks keeps the whole value).
TICK_COLUMNS: tuple[str, ...] = ("symbol", "ts", "price", "size", "seq", "producer_id")
TICK_OPTIONAL_FIELDS: tuple[str, ...] = ("bid", "ask", "bid_size", "ask_size", "source")
TICK_MESSAGE_DDL = (
    "schema_version INT, symbol STRING, ts LONG, price DOUBLE, size LONG, "
    "seq LONG, producer_id STRING"
)
#: A live feed's record of a frame it could not read carries this field, not a tick
#: (``stockpipe.live.rejected_value``): the streaming job quarantines it (``feed_error``).
FEED_ERROR_FIELD = "feed_error"
#: Spark DDL the streaming job parses a tick value with: the message and FEED_ERROR_FIELD.
TICK_PARSE_DDL = f"{TICK_MESSAGE_DDL}, {FEED_ERROR_FIELD} STRING"

#: Fields a bar message must carry (adj_close, source, ingested_at, batch_id may be null).
BAR_REQUIRED_FIELDS: tuple[str, ...] = ("schema_version", *BAR_KEY, *PRICE_COLUMNS, "volume")
#: Bar fields given as ISO 8601 text.
BAR_TIMESTAMP_FIELDS: tuple[str, ...] = ("ts", "ingested_at")
#: Non-string fields of BAR_MESSAGE_DDL: their JSON type can be wrong (a string field
#: takes any JSON text).
BAR_TYPED_FIELDS: tuple[str, ...] = ("schema_version", *PRICE_COLUMNS, "adj_close", "volume")
TICK_REQUIRED_FIELDS: tuple[str, ...] = ("schema_version", *TICK_COLUMNS)
TICK_TYPED_FIELDS: tuple[str, ...] = ("schema_version", "ts", "price", "size", "seq")
#: ``seq`` is a per-producer counter from 0; its 40 bits share one long with the
#: tick's place in its window (see ``tick_transforms.window_aggregates``).
SEQ_BITS = 40
MAX_SEQ = 2**SEQ_BITS - 1

_PRICES = "open, high, low, close, adj_close"
_RECORD_REASONS: dict[str, str] = {
    "invalid_utf8": "the Kafka value is not valid UTF-8 (original bytes in value_b64)",
    "record_too_large": f"the value is over {MAX_RECORD_BYTES} bytes, so it was not parsed",
    "unparsable_json": "the value is not a JSON object of the message shape",
}

#: Why a bar is quarantined: every code a record fails is listed, in this order.
BAR_REASONS: dict[str, str] = {
    **_RECORD_REASONS,
    **{f"wrong_type_{f}": f"field {f} has the wrong JSON type" for f in BAR_TYPED_FIELDS},
    **{
        f"missing_{f}": f"required field {f} is missing, null or empty" for f in BAR_REQUIRED_FIELDS
    },
    **{
        f"bad_timestamp_{f}": f"field {f} is not an ISO 8601 timestamp with a zone"
        for f in BAR_TIMESTAMP_FIELDS
    },
    "unknown_schema_version": f"schema_version is not {SCHEMA_VERSION}",
    "bad_symbol": f"symbol is not 1-{MAX_SYMBOL_LENGTH} of the characters {SYMBOL_CHARS}",
    "unknown_interval": f"interval is not one of {', '.join(INTERVALS)}",
    "non_finite_price": f"a price ({_PRICES}) is NaN or infinite",
    "non_positive_price": f"a price ({_PRICES}) is zero or negative",
    "price_too_large": f"a price ({_PRICES}) is above {MAX_PRICE:g}",
    "high_below_range": "high is below open, close or low",
    "low_above_range": "low is above open or close",
    "negative_volume": "volume is negative",
    "volume_too_large": f"volume is above {MAX_VOLUME:g}",
    "early_ts": f"ts is before {MIN_BAR_TS:%Y-%m-%d}",
    "future_ts": f"ts is more than {FUTURE_SKEW_S} s after Kafka's receipt of the record",
    "future_ingested_at": (
        f"ingested_at is more than {FUTURE_SKEW_S} s after Kafka's receipt of the record"
    ),
}

#: Why a tick is quarantined: every code a record fails is listed, in this order.
TICK_REASONS: dict[str, str] = {
    **_RECORD_REASONS,
    "feed_error": "a live feed's frame that could not be read (its text in feed_error)",
    **{f"wrong_type_{f}": f"field {f} has the wrong JSON type" for f in TICK_TYPED_FIELDS},
    **{
        f"missing_{f}": f"required field {f} is missing, null or empty"
        for f in TICK_REQUIRED_FIELDS
    },
    "unknown_schema_version": f"schema_version is not {SCHEMA_VERSION}",
    "bad_symbol": f"symbol is not 1-{MAX_SYMBOL_LENGTH} of the characters {SYMBOL_CHARS}",
    "non_finite_price": "price is NaN or infinite",
    "non_positive_price": "price is zero or negative",
    "price_too_large": f"price is above {MAX_PRICE:g}",
    "non_positive_size": "size is zero or negative",
    "size_too_large": f"size is above {MAX_TICK_SIZE:g}",
    "early_ts": "ts is not after the epoch (epoch milliseconds above 0)",
    "seq_out_of_range": f"seq is not between 0 and 2^{SEQ_BITS} - 1",
    "future_ts": "ts is further after Kafka's receipt than the watermark delay allows",
}

#: Columns of a raw-zone row: the Kafka record as received.
RAW_COLUMNS: tuple[str, ...] = (
    "key",
    "value",
    "topic",
    "partition",
    "offset",
    "kafka_timestamp",
    "ingest_date",
)
#: Raw-zone columns (raw/bars, raw/ticks): RAW_COLUMNS plus ``value_b64`` and ``key_b64``,
#: the base64 of the original bytes, set only when they are not valid UTF-8 (``value``
#: and ``key`` then hold them with U+FFFD replacements, so any reader can read them).
RAW_ZONE_COLUMNS: tuple[str, ...] = (*RAW_COLUMNS, "value_b64", "key_b64")

#: The rows Spark's Kafka source gives.
KAFKA_SOURCE_DDL = (
    "key BINARY, value BINARY, topic STRING, partition INT, offset BIGINT, "
    "timestamp TIMESTAMP, timestampType INT"
)

#: Where a record came from in Kafka; kept on parsed, valid and quarantined rows.
KAFKA_COLUMNS: tuple[str, ...] = ("topic", "partition", "offset", "kafka_timestamp")

#: quarantine/bars: why, the record as received, and what could be parsed.
QUARANTINE_COLUMNS: tuple[str, ...] = (
    "reason",
    "reasons",
    "key",
    "value",
    "value_b64",
    "key_b64",
    *KAFKA_COLUMNS,
    "symbol",
    "source",
    "batch_id",
    "quarantined_at",
)

#: Derived columns of processed bars.
DERIVED_COLUMNS: tuple[str, ...] = (
    "return",
    "log_return",
    "sma_20",
    "sma_50",
    "volatility_20",
    "range_pct",
)

#: processed/bars is partitioned by these; files inside are sorted by symbol, ts.
PARTITION_COLUMNS: tuple[str, ...] = ("interval", "year")
PROCESSED_COLUMNS: tuple[str, ...] = (*BAR_COLUMNS, *DERIVED_COLUMNS, "year")

BAR_ARROW_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("adj_close", pa.float64()),
        ("volume", pa.int64()),
        ("source", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("batch_id", pa.string()),
    ]
)


#: processed/bars: the bar contract, the derived columns and the ``year`` partition.
PROCESSED_SCHEMA = pa.schema(
    [
        *BAR_ARROW_SCHEMA,
        *[pa.field(name, pa.float64()) for name in DERIVED_COLUMNS],
        pa.field("year", pa.int32()),
    ]
)

#: processed/tick_windows: one row per symbol and sliding window.
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

#: quarantine/ticks: the record as received, and why it failed.
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
        ("value_b64", pa.string()),  # the value's bytes when they are not UTF-8
        ("key_b64", pa.string()),  # the key's bytes when they are not UTF-8
    ]
)

#: raw/bars and raw/ticks: every Kafka record as received (RAW_ZONE_COLUMNS).
RAW_SCHEMA = pa.schema([f for f in QUARANTINE_TICKS_SCHEMA if f.name != "reason"])
RAW_TICKS_SCHEMA = RAW_SCHEMA

#: quarantine/bars: QUARANTINE_COLUMNS and the ``quarantine_date`` partition (the UTC
#: day of ``quarantined_at``).
QUARANTINE_BARS_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),  # every code, "; "-joined
        ("reasons", pa.list_(pa.string())),  # the same codes, one item each
        ("key", pa.string()),
        ("value", pa.string()),
        ("value_b64", pa.string()),
        ("key_b64", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("symbol", pa.string()),
        ("source", pa.string()),
        ("batch_id", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
        ("quarantine_date", pa.date32()),
    ]
)

#: processed/stream_metrics: one row per micro-batch of a streaming query.
METRICS_SCHEMA = pa.schema(
    [
        ("query_name", pa.string()),
        ("query_id", pa.string()),
        ("run_id", pa.string()),
        ("batch_id", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("num_input_rows", pa.int64()),
        ("input_rows_per_second", pa.float64()),
        ("processed_rows_per_second", pa.float64()),
        ("batch_duration_ms", pa.int64()),
        ("watermark", pa.timestamp("us", tz="UTC")),
        ("state_rows", pa.int64()),
        ("state_memory_bytes", pa.int64()),
        ("late_rows_dropped", pa.int64()),
        ("date", pa.date32()),
    ]
)


@dataclass(frozen=True)
class TableLayout:
    """A lake table as its job writes it: columns and types, partition columns, and
    whether it records its row changes (Delta's change data feed)."""

    schema: pa.Schema
    partitions: tuple[str, ...]
    change_feed: bool = True


#: Every Delta table of the lake (by zone name, ``stockpipe.lake.TABLES``), as the jobs
#: write it: Spark's writers make every column nullable and turn the change data feed
#: on (the session's default); the metrics table is written by ``deltalake``, without.
TABLE_LAYOUTS: dict[str, TableLayout] = {
    "raw_bars": TableLayout(RAW_SCHEMA, ("ingest_date",)),
    "quarantine_bars": TableLayout(QUARANTINE_BARS_SCHEMA, ("quarantine_date",)),
    "processed_bars": TableLayout(PROCESSED_SCHEMA, PARTITION_COLUMNS),
    "raw_ticks": TableLayout(RAW_SCHEMA, ("ingest_date",)),
    "quarantine_ticks": TableLayout(QUARANTINE_TICKS_SCHEMA, ("ingest_date",)),
    "tick_windows": TableLayout(TICK_WINDOWS_SCHEMA, ("date",)),
    "stream_metrics": TableLayout(METRICS_SCHEMA, ("date",), change_feed=False),
}


def empty_bars() -> pd.DataFrame:
    """A zero-row frame with the canonical bar columns and dtypes."""
    return BAR_ARROW_SCHEMA.empty_table().to_pandas()


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`MissingColumnsError` naming the ``columns`` that ``df`` lacks."""
    from stockpipe.errors import MissingColumnsError

    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumnsError(what, missing)


def conform_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Order and type a frame's columns as the bar contract says.

    Bad values (NaN prices, negative volume) are kept as they are: validation is
    the Spark job's work, which quarantines them with a reason.
    """
    import pandas as pd

    require_columns(df, BAR_COLUMNS, "bars")
    out = df.loc[:, list(BAR_COLUMNS)].copy()
    out["symbol"] = out["symbol"].astype(str).str.upper()
    for col in ("ts", "ingested_at"):
        out[col] = pd.to_datetime(out[col], utc=True)
    for col in (*PRICE_COLUMNS, "adj_close"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["volume"] = pd.to_numeric(out["volume"], errors="coerce").astype("Int64")
    return out.reset_index(drop=True)


def bar_messages(bars: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` Kafka payloads for a conformed bar frame.

    Encoded by polars' native NDJSON writer (a million bars in about a second;
    json.dumps per row is ten times slower). NaN prices and missing volumes
    become JSON null; floats use the shortest exact representation.
    """
    import polars as pl

    if bars.empty:
        return []
    iso = "%Y-%m-%dT%H:%M:%S%.3fZ"
    frame = (
        pl.from_arrow(pa.Table.from_pandas(bars.loc[:, list(BAR_COLUMNS)], preserve_index=False))
        .with_columns(
            pl.col("ts", "ingested_at").dt.convert_time_zone("UTC").dt.strftime(iso),
            pl.col(pl.Float64).fill_nan(None),
            pl.lit(SCHEMA_VERSION, dtype=pl.Int32).alias("schema_version"),
        )
        .select("schema_version", *BAR_COLUMNS)
    )
    values = frame.write_ndjson().encode().splitlines()
    keys = [s.encode() for s in frame["symbol"].to_list()]
    return list(zip(keys, values, strict=True))
