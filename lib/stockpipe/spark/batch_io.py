"""How the batch job reads Kafka and its Delta tables, and commits to them: through
Spark's Kafka source and Delta reader and writer, or, for a batch small enough,
from the driver (a Kafka consumer, ``deltalake``).

Both give Spark the same rows to compute with and make the same commits: the same
rows, partitions and ``userMetadata`` (the offsets a table holds, ``stockpipe.tables``).
On a small batch Spark's Delta machinery is most of the job's time (a job to replay
each table's log, file-filtering jobs each time a plan that reads a table is
optimized, a MERGE that searches the touched files first); from the driver each of
these takes a fraction of a second. Only what fits the driver goes that way
(``DriverIO.fits``); Spark computes either way.

Corrections are merged by Spark either way: ``deltalake``'s MERGE (1.6) writes
string columns as Arrow ``string_view``, which pyarrow's dataset filters cannot
compare with the files' statistics, so every pyarrow or DuckDB reader that
filters by symbol would fail on the files it rewrote (delta-io/delta-rs#4579).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from stockpipe.changefeed import CDF_PROPERTY
from stockpipe.config import Settings
from stockpipe.lake import storage_options, table_uri, zone
from stockpipe.schemas import KAFKA_SOURCE_DDL
from stockpipe.spark import transforms as T
from stockpipe.spark.session import default_parallelism, kafka_reader, session_conf
from stockpipe.spark.tuning import Tuning
from stockpipe.tables import open_table

#: Session setting that puts a text into the ``userMetadata`` of Spark's Delta commits.
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass(frozen=True)
class Scan:
    """Rows of one interval of processed/bars with ``since <= ts < before``, of ``symbols``."""

    interval: str
    symbols: tuple[str, ...]
    since: datetime | None = None
    before: datetime | None = None


@dataclass(frozen=True)
class Upsert:
    """Processed rows by ``keys``, touching only the partitions of each interval
    from year ``years[interval]`` on (literal filters prune the files a MERGE opens)."""

    keys: tuple[str, ...]
    years: dict[str, int]
    columns: tuple[str, ...]
    partitions: tuple[str, ...]


class SparkIO:
    """Kafka and the tables through Spark (any batch size, any cluster)."""

    def __init__(self, settings: Settings, spark: SparkSession) -> None:
        self.settings = settings
        self.spark = spark
        # the session's own task slots where it says (a cluster may differ from settings)
        tuning = Tuning.of(settings)
        cores = default_parallelism(spark)
        self.tuning = dataclasses.replace(tuning, cores=cores) if cores else tuning

    def path(self, table: str) -> str:
        return zone(self.settings, table, spark=True)

    def read(self, topic: str, start: dict[int, int], end: dict[int, int]) -> DataFrame:
        """The Kafka records from ``start`` to ``end``, as Spark's Kafka source gives them."""
        ranges = {
            which: json.dumps({topic: {str(p): o for p, o in offsets.items()}})
            for which, offsets in (("startingOffsets", start), ("endingOffsets", end))
        }
        records = sum(e - start.get(p, 0) for p, e in end.items())
        if tasks := self.tuning.read_tasks(records, len(end)):
            ranges["minPartitions"] = str(tasks)
        return kafka_reader(self.spark, self.settings, topic).options(**ranges).load()

    def scan(self, table: str, scans: Sequence[Scan], columns: Sequence[str]) -> DataFrame:
        """The rows of ``table`` that any of ``scans`` selects, in ``columns``."""
        df = self.spark.read.format("delta").load(self.path(table))
        return df.filter(_spark_filter(scans)).select(*columns)

    def append(
        self, table: str, df: DataFrame, metadata: str, partitions: Sequence[str]
    ) -> int | None:
        """Append ``df`` in one commit (none if it has no rows: Delta makes none);
        the rows written where known without another query."""
        (
            df.write.format("delta")
            .mode("append")
            .option("userMetadata", metadata)
            # a column the contract gained (key_b64) joins a table made before
            .option("mergeSchema", "true")
            .partitionBy(*partitions)
            .save(self.path(table))
        )
        return None

    def upsert(self, table: str, changes: DataFrame, how: Upsert, metadata: str) -> tuple[int, int]:
        """Commit processed rows (``transforms.processed_changes``): a MERGE when some
        replace rows in the table, else an append; nothing when there are none.
        Returns (inserted, updated)."""
        changes = changes.persist()
        try:
            counts = {r[0]: r[1] for r in changes.groupBy(T.UPDATE_FLAG).count().collect()}
            inserted, updated = counts.get(False, 0), counts.get(True, 0)
            if updated:
                self._merge(table, changes, how, metadata)
            elif inserted:  # only new rows (the usual day): nothing to match
                self.append(table, T.for_processed_write(changes), metadata, how.partitions)
        finally:
            changes.unpersist()
        return inserted, updated

    def _merge(self, table: str, source: DataFrame, how: Upsert, metadata: str) -> None:
        from delta.tables import DeltaTable

        target = DeltaTable.forPath(self.spark, self.path(table))
        keys = [f"t.`{c}` = s.`{c}`" for c in how.keys]
        parts = [f"(t.`interval` = '{i}' AND t.`year` >= {y})" for i, y in how.years.items()]
        cond = " AND ".join([*keys, "(" + " OR ".join(parts) + ")"])
        values = {c: f"s.`{c}`" for c in how.columns}
        with session_conf(self.spark, {USER_METADATA: metadata}):
            (
                target.alias("t")
                .merge(source.alias("s"), cond)
                .whenMatchedUpdate(set=values)
                .whenNotMatchedInsert(values=values)
                .execute()
            )


class DriverIO(SparkIO):
    """Kafka and the tables from the driver, for batches that fit there."""

    def fits(self, records: int, context_rows: int = 0) -> bool:
        most = self.tuning.driver_max_records
        return records <= most and context_rows <= most * self.tuning.driver_context_rows_per_record

    def read(self, topic: str, start: dict[int, int], end: dict[int, int]) -> DataFrame:
        from stockpipe.kafka import read_range

        arrow = read_range(self.settings, topic, start, end)
        return self.spark.createDataFrame(arrow, schema=KAFKA_SOURCE_DDL)

    def scan(self, table: str, scans: Sequence[Scan], columns: Sequence[str]) -> DataFrame:
        dt = open_table(self.settings, table)
        assert dt is not None, f"{table} has no Delta table to scan"
        arrow = dt.to_pyarrow_dataset().to_table(filter=_arrow_filter(scans, symbols=False))
        # symbols after the read: a string_view file (another writer's) would fail
        # pyarrow's comparison with its statistics
        arrow = arrow.filter(_arrow_filter(scans)).select(list(columns))
        return self.spark.createDataFrame(arrow)

    def append(
        self, table: str, df: DataFrame, metadata: str, partitions: Sequence[str]
    ) -> int | None:
        arrow = df.toArrow()
        if arrow.num_rows:  # as Spark's writer: no rows, no commit
            self._write(table, arrow, metadata, partitions)
        return arrow.num_rows

    def upsert(self, table: str, changes: DataFrame, how: Upsert, metadata: str) -> tuple[int, int]:
        import pyarrow.compute as pc

        arrow = changes.toArrow()
        updated = int(pc.sum(arrow.column(T.UPDATE_FLAG).cast("int64")).as_py() or 0)
        inserted = arrow.num_rows - updated
        rows = arrow.select(list(how.columns))
        if updated:  # Spark's MERGE: deltalake's writes strings as string_view (see below)
            self._merge(table, self.spark.createDataFrame(rows), how, metadata)
        elif inserted:  # sorted as Spark's write sorts (for_processed_write)
            order = [(c, "ascending") for c in (*how.partitions, "symbol", "ts")]
            self._write(table, rows.sort_by(order), metadata, how.partitions)
        return inserted, updated

    def mark(
        self, table: str, metadata: str, empty: Callable[[], DataFrame], partitions: Sequence[str]
    ) -> None:
        """A commit with no rows that carries ``metadata`` (Spark's writer makes none
        for no rows; ``deltalake`` does), and makes the table if missing."""
        self._write(table, empty().toArrow(), metadata, partitions)

    def _write(self, table: str, arrow: Any, metadata: str, partitions: Sequence[str]) -> None:
        from deltalake import CommitProperties, write_deltalake

        write_deltalake(
            table_uri(self.settings, table),
            arrow,
            mode="append",
            schema_mode="merge",  # a column the contract gained joins a table made before
            partition_by=list(partitions),
            # a table made here records its changes, as the tables Spark makes do
            configuration={CDF_PROPERTY: "true"},
            storage_options=storage_options(self.settings),
            commit_properties=CommitProperties(custom_metadata={"userMetadata": metadata}),
        )


def partition_rows(settings: Settings, table: str) -> dict[tuple[str, int], int]:
    """Rows per (interval, year) partition of ``table``, from the log's file statistics
    (no data read); empty if the table is not made yet."""
    import pyarrow as pa

    dt = open_table(settings, table)
    if dt is None:
        return {}
    actions = pa.table(dt.get_add_actions(flatten=True))
    out: dict[tuple[str, int], int] = {}
    if not actions.num_rows:
        return out
    intervals = actions.column("partition.interval").to_pylist()
    years = actions.column("partition.year").to_pylist()
    rows = actions.column("num_records").to_pylist()
    for i, y, n in zip(intervals, years, rows, strict=True):
        out[(i, int(y))] = out.get((i, int(y)), 0) + (n or 0)
    return out


def _spark_filter(scans: Sequence[Scan]) -> Column:
    out = F.lit(False)
    for s in scans:
        cond = (F.col("interval") == s.interval) & F.col("symbol").isin(list(s.symbols))
        if s.since is not None:
            cond &= (F.col("year") >= s.since.year) & (F.col("ts") >= T.timestamp_literal(s.since))
        if s.before is not None:
            cond &= (F.col("year") <= s.before.year) & (F.col("ts") < T.timestamp_literal(s.before))
        out = out | cond
    return out


def _arrow_filter(scans: Sequence[Scan], *, symbols: bool = True) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    def moment(when: datetime) -> Any:
        return pa.scalar(when, pa.timestamp("us", "UTC"))

    out = pc.scalar(False)
    for s in scans:
        cond = pc.field("interval") == s.interval
        if symbols:
            cond &= pc.field("symbol").isin(list(s.symbols))
        if s.since is not None:
            cond &= (pc.field("year") >= s.since.year) & (pc.field("ts") >= moment(s.since))
        if s.before is not None:
            cond &= (pc.field("year") <= s.before.year) & (pc.field("ts") < moment(s.before))
        out = out | cond
    return out
