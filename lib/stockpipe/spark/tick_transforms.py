"""Pure transforms of the tick streaming job: Kafka records to validated ticks,
quarantined records and sliding-window aggregates.

The bar job's twin is ``stockpipe.spark.transforms``; both make raw rows with
``stockpipe.spark.records`` and build their reasons with ``stockpipe.spark.checks``.
Every function takes DataFrames and plain scalars and returns DataFrames, batch or
streaming alike; the job around them (``stockpipe.spark.streaming``) reads and writes.

Flow::

    kafka source --raw_from_kafka--> raw (the raw query)
    kafka source --parse_ticks--> parsed --validate_ticks--> validated
    validated --valid_ticks--> ticks --window_aggregates--> windows
    kafka source --needs_checking--> --parse_ticks, validate_ticks--> --quarantined_ticks-->
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stockpipe.schemas import (
    FEED_ERROR_FIELD,
    FUTURE_SKEW_S,
    MAX_SEQ,
    MAX_SYMBOL_LENGTH,
    MAX_TICK_SIZE,
    QUARANTINE_TICKS_SCHEMA,
    SCHEMA_VERSION,
    SEQ_BITS,
    SYMBOL_CHARS,
    TICK_COLUMNS,
    TICK_PARSE_DDL,
    TICK_REASONS,
    TICK_REQUIRED_FIELDS,
    TICK_TYPED_FIELDS,
)
from stockpipe.spark.checks import (
    bad_symbol,
    fence,
    parse_value,
    price_checks,
    with_reason,
    wrong_type_fields,
)
from stockpipe.spark.records import raw_from_kafka
from stockpipe.times import to_ms

#: A tick may be this far ahead of its Kafka timestamp (clock skew), and never more
#: than the watermark delay (``future_tolerance``): beyond, it would push the
#: watermark past the honest ticks of the same moment, so it is quarantined.
FUTURE_TOLERANCE_MS = FUTURE_SKEW_S * 1000


def future_tolerance(watermark: str) -> int:
    """How far (ms) a tick may be ahead of its Kafka time with this watermark delay."""
    return min(FUTURE_TOLERANCE_MS, to_ms(watermark))


#: The exact shape of the library producer's ticks. A value of this shape passes
#: every check but ``future_ts`` (symbol, numbers and ranges are in the pattern), so
#: the quarantine query tests it with one regular expression instead of parsing
#: the JSON; any other value, valid or not, takes the full parse.
CANONICAL_TICK = (
    rf'^\{{"schema_version":{SCHEMA_VERSION},"symbol":"[{SYMBOL_CHARS}]{{1,{MAX_SYMBOL_LENGTH}}}",'
    r'"ts":[1-9][0-9]{0,17},'
    # below MAX_PRICE (1e9): at most nine digits before the point
    r'"price":(?:[1-9][0-9]{0,8}(?:\.[0-9]{1,17})?|0\.[0-9]{0,16}[1-9][0-9]{0,16}),'
    r'"size":[1-9][0-9]{0,8},"seq":(?:0|[1-9][0-9]{0,11}),'
    r'"producer_id":"[A-Za-z0-9._:-]{1,64}"\}\z'
)


def parse_ticks(records: DataFrame) -> DataFrame:
    """Raw records plus the tick's fields parsed with the contract's schema.

    Never fails: a value that is not JSON, or whose field has the wrong type,
    leaves the fields null and says so (``checks.parse_value``).
    """
    raw = raw_from_kafka(records)
    parsed = parse_value(raw, TICK_PARSE_DDL, TICK_TYPED_FIELDS)
    return parsed.select(
        *raw.columns,
        *[F.col(f"_msg.{name}").alias(name) for name in (*TICK_COLUMNS, "schema_version")],
        F.col(f"_msg.{FEED_ERROR_FIELD}").alias(FEED_ERROR_FIELD),
        "too_large",
        "json_unparsable",
        wrong_type_fields(parsed).alias("wrong_type_fields"),
    )


def _tick_checks(future_tolerance_ms: int) -> dict[str, Column]:
    """One boolean column per reason code, in TICK_REASONS order."""
    c = F.col
    # a feed's rejected frame carries no tick: its missing fields are no news
    ok_json = ~c("json_unparsable") & ~c("too_large") & c(FEED_ERROR_FIELD).isNull()

    def wrong_type(name: str) -> Column:
        return F.array_contains("wrong_type_fields", name)

    def missing(name: str) -> Column:
        absent = c(name).isNull()
        if name in ("symbol", "producer_id"):
            absent = absent | (F.trim(c(name)) == "")
        if name in TICK_TYPED_FIELDS:
            absent = absent & ~wrong_type(name)
        return ok_json & absent

    checks: dict[str, Column] = {
        "invalid_utf8": c("value_b64").isNotNull(),
        "record_too_large": c("too_large"),
        "unparsable_json": c("json_unparsable"),
        "feed_error": c(FEED_ERROR_FIELD).isNotNull(),
        **{f"wrong_type_{f}": wrong_type(f) for f in TICK_TYPED_FIELDS},
        **{f"missing_{f}": missing(f) for f in TICK_REQUIRED_FIELDS},
        "unknown_schema_version": c("schema_version") != SCHEMA_VERSION,
        "bad_symbol": bad_symbol(c("symbol")),
        **price_checks(["price"]),
        "non_positive_size": c("size") <= 0,
        "size_too_large": c("size") > MAX_TICK_SIZE,
        "early_ts": c("ts") <= 0,
        "seq_out_of_range": (c("seq") < 0) | (c("seq") > MAX_SEQ),
        "future_ts": c("ts") > F.unix_millis("kafka_timestamp") + future_tolerance_ms,
    }
    assert list(checks) == list(TICK_REASONS), "rules and TICK_REASONS must match"
    return checks


def validate_ticks(
    parsed: DataFrame, *, future_tolerance_ms: int = FUTURE_TOLERANCE_MS
) -> DataFrame:
    """Add ``reason``: null for a valid tick, else the TICK_REASONS codes it fails,
    "; "-joined."""
    flagged = with_reason(parsed, _tick_checks(future_tolerance_ms))
    reason = F.when(F.col("reason") != "", F.col("reason"))
    # fenced: a filter on ``reason`` would otherwise be pushed below the parse and
    # repeat from_json for every field it tests (uncompiled, once per field)
    return fence(flagged.withColumn("reason", reason))


def needs_checking(
    records: DataFrame, *, future_tolerance_ms: int = FUTURE_TOLERANCE_MS
) -> DataFrame:
    """Kafka records minus the canonical valid ticks: what the quarantine query parses.

    A tick of :data:`CANONICAL_TICK`'s shape is valid unless too far in the future,
    which is checked here on its ``ts`` (at a fixed place in that shape).
    """
    value = F.col("value").cast("string")
    ts = F.substring_index(F.substring_index(value, ',"price":', 1), '"ts":', -1)
    canonical = value.rlike(CANONICAL_TICK) & (
        ts.try_cast("long") <= F.unix_millis("timestamp") + future_tolerance_ms
    )
    return records.where(~F.coalesce(canonical, F.lit(False)))


def valid_ticks(validated: DataFrame) -> DataFrame:
    """The ticks that passed, with ``event_time`` as a timestamp."""
    return validated.where(F.col("reason").isNull()).select(
        "symbol",
        "ts",
        F.timestamp_millis("ts").alias("event_time"),
        "price",
        "size",
        "seq",
        "producer_id",
    )


def quarantined_ticks(validated: DataFrame) -> DataFrame:
    """The ticks that failed, as received, with the reason (partitioned by ingest date)."""
    return validated.where(F.col("reason").isNotNull()).select(*QUARANTINE_TICKS_SCHEMA.names)


def window_aggregates(ticks: DataFrame, *, window: str, slide: str, watermark: str) -> DataFrame:
    """Sliding event-time windows per symbol: OHLC, VWAP, volume, count, price std.

    Open and close are the prices of the first and last tick by event time (ties
    broken by ``seq``), not by arrival. ``price_std`` is the sample standard
    deviation (null for a single tick). ``date`` is the UTC date of the window start.
    """
    framed = ticks.withWatermark("event_time", watermark).select(
        "*", F.window("event_time", window, slide).alias("window")
    )
    if to_ms(window) <= 2 ** (63 - SEQ_BITS):
        # (ms into the window, seq) packed in one long: a fixed-width aggregation
        # buffer, so Spark hash-aggregates (a struct key makes it sort, which is slower)
        offset = F.col("ts") - F.unix_millis("window.start")
        order = F.shiftleft(offset, SEQ_BITS) + F.col("seq")
    else:  # windows over 2^23 ms (2.3 h): offsets no longer fit beside seq
        order = F.struct("event_time", "seq")
    return (
        framed.groupBy("symbol", "window")
        .agg(
            F.min_by("price", order).alias("open"),
            F.max("price").alias("high"),
            F.min("price").alias("low"),
            F.max_by("price", order).alias("close"),
            (F.sum(F.col("price") * F.col("size")) / F.sum("size")).alias("vwap"),
            F.sum("size").alias("volume"),
            F.count(F.lit(1)).alias("trade_count"),
            F.stddev_samp("price").alias("price_std"),
        )
        .select(
            "symbol",
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            "open",
            "high",
            "low",
            "close",
            "vwap",
            "volume",
            "trade_count",
            "price_std",
            F.to_date("window.start").alias("date"),
        )
    )
