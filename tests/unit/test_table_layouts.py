"""The layouts ``ensure_tables`` creates the lake's tables with are those the jobs write."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from pyspark.sql import functions as F

from stockpipe.lake import TABLES
from stockpipe.schemas import (
    KAFKA_SOURCE_DDL,
    QUARANTINE_BARS_SCHEMA,
    QUARANTINE_COLUMNS,
    RAW_SCHEMA,
    RAW_ZONE_COLUMNS,
    TABLE_LAYOUTS,
)
from stockpipe.spark import batch
from stockpipe.spark import transforms as T
from stockpipe.spark.records import raw_from_kafka
from stockpipe.spark.streaming import TABLES as STREAM_TABLES
from stockpipe.spark.tick_transforms import (
    parse_ticks,
    quarantined_ticks,
    valid_ticks,
    validate_ticks,
    window_aggregates,
)


def _types(schema: pa.Schema) -> list[tuple[str, str]]:
    """Names and types, whatever a list's item is called (Spark: element, pyarrow: item)."""

    def plain(t: pa.DataType) -> str:
        return f"list<{plain(t.value_type)}>" if pa.types.is_list(t) else str(t)

    return [(f.name, plain(f.type)) for f in schema]


def test_every_table_of_the_lake_has_a_layout_and_every_column_is_nullable():
    assert set(TABLE_LAYOUTS) == set(TABLES) == {*batch.TABLES, *STREAM_TABLES}
    assert tuple(RAW_SCHEMA.names) == RAW_ZONE_COLUMNS
    assert QUARANTINE_BARS_SCHEMA.names == [*QUARANTINE_COLUMNS, "quarantine_date"]
    for name, layout in TABLE_LAYOUTS.items():
        assert all(f.nullable for f in layout.schema), name  # as Spark's writers make them
        assert set(layout.partitions) <= set(layout.schema.names), name
    for name, partitions in batch.PARTITIONS.items():
        assert TABLE_LAYOUTS[name].partitions == partitions


def test_layouts_are_the_columns_and_types_the_spark_jobs_write(spark):
    """The jobs' own transforms, on no rows, give each table's columns and types."""
    kafka = spark.createDataFrame([], KAFKA_SOURCE_DDL)
    now = datetime(2024, 1, 2, tzinfo=UTC)
    flagged = T.slim_flagged(T.flag_bars(T.parse_bars(raw_from_kafka(kafka)), now))
    valid, quarantine = T.split_flagged(flagged, now)
    validated = validate_ticks(parse_ticks(kafka), future_tolerance_ms=5_000)
    windows = window_aggregates(
        valid_ticks(validated), window="1 minute", slide="15 seconds", watermark="30 seconds"
    )
    written = {
        "raw_bars": raw_from_kafka(kafka),
        "quarantine_bars": quarantine.withColumn("quarantine_date", F.to_date("quarantined_at")),
        "processed_bars": T.for_processed_write(T.add_derived(T.dedupe_bars(valid))),
        "raw_ticks": raw_from_kafka(kafka),
        "quarantine_ticks": quarantined_ticks(validated),
        "tick_windows": windows,
    }
    for name, df in written.items():
        assert _types(df.toArrow().schema) == _types(TABLE_LAYOUTS[name].schema), name
