"""Kafka records to raw-zone rows and back, shared by the bar and tick jobs.

Both jobs keep every record as received (RAW_ZONE_COLUMNS of ``stockpipe.schemas``)
before parsing it: ``raw_from_kafka`` makes those rows from Spark's Kafka source,
``kafka_records`` gives the source's rows back from them (the bar job re-reads
raw/bars that way). Pure column logic: no settings, storage or clock.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def utc_date(ts: Column) -> Column:
    """The UTC calendar date of an instant, whatever the session time zone."""
    days = F.floor(F.unix_seconds(ts) / F.lit(86_400)).cast("int")
    return F.date_from_unix_date(days)


def or_null(df: DataFrame, name: str, dtype: str) -> Column:
    """``df[name]``, or a typed null when an older layout lacks that column."""
    return F.col(name) if name in df.columns else F.lit(None).cast(dtype)


def raw_from_kafka(df: DataFrame) -> DataFrame:
    """Kafka source rows as raw-zone rows (RAW_ZONE_COLUMNS): nothing dropped.

    Only the source's key, value, topic, partition, offset and timestamp are read.
    ``key`` and ``value`` are UTF-8 text; bytes that are not valid UTF-8 would make
    the Parquet string unreadable outside Spark, so they are replaced there and kept
    exactly, base64-encoded, in ``key_b64`` and ``value_b64`` (null for valid ones).
    ``ingest_date`` is the UTC date of the Kafka timestamp.
    """
    key, value = F.col("key").cast("string"), F.col("value").cast("string")
    return df.select(
        F.make_valid_utf8(key).alias("key"),
        F.make_valid_utf8(value).alias("value"),
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        utc_date(F.col("timestamp")).alias("ingest_date"),
        F.when(~F.is_valid_utf8(value), F.base64(F.col("value"))).alias("value_b64"),
        F.when(~F.is_valid_utf8(key), F.base64(F.col("key"))).alias("key_b64"),
    )


def kafka_records(raw: DataFrame) -> DataFrame:
    """Raw-zone rows as Spark's Kafka source gave them (the inverse of raw_from_kafka):
    the original bytes from ``key_b64`` and ``value_b64`` where they were not UTF-8."""

    def original(text: str) -> Column:
        b64 = or_null(raw, f"{text}_b64", "string")  # a table made before key_b64
        return F.when(b64.isNotNull(), F.unbase64(b64)).otherwise(F.encode(text, "UTF-8"))

    return raw.select(
        original("key").alias("key"),
        original("value").alias("value"),
        "topic",
        "partition",
        "offset",
        F.col("kafka_timestamp").alias("timestamp"),
    )


def beyond(offsets: dict[int, int]) -> Column:
    """Rows whose Kafka offset a table with ``offsets`` does not hold yet."""
    cond = F.lit(True)
    for p, o in offsets.items():
        cond = F.when(F.col("partition") == p, F.col("offset") >= o).otherwise(cond)
    return cond
