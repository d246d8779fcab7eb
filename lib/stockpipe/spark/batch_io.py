"""How the batch job reads Kafka and its Delta tables and commits to them: one
implementation of each operation, run where Spark runs (the warm Connect server).

Every write returns a :class:`Commit` (the table's version after it, rows added and
changed): what the job reports comes from the commit itself, not from a count of its
own. The one operation Spark cannot do, a commit with no rows (its writer makes none),
is ``deltalake``'s (:func:`mark`): it records the offsets of a slice that gave a table no rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from stockpipe.changefeed import CDF_PROPERTY
from stockpipe.config import Settings
from stockpipe.lake import storage_options, table_uri, zone
from stockpipe.spark import transforms as T
from stockpipe.spark.session import kafka_reader, session_conf
from stockpipe.spark.tuning import Tuning
from stockpipe.tables import open_table

#: Session setting that puts a text into the ``userMetadata`` of Spark's Delta commits.
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
#: Session settings of Delta's idempotent writes for SQL commands (MERGE).
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"

#: Delta's idempotent-write key of a commit: (app id, version). The table skips a
#: commit whose version is not above the last one it holds for that app id.
Txn = tuple[str, int]


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


@dataclass(frozen=True)
class Commit:
    """What a write did: the table's version after it (None: no commit was made) and
    the rows it added and changed."""

    version: int | None
    inserted: int = 0
    updated: int = 0

    @property
    def rows(self) -> int:
        return self.inserted + self.updated


class TableIO:
    """Kafka and the batch job's tables, through the job's Spark session."""

    def __init__(self, settings: Settings, spark: SparkSession) -> None:
        self.settings = settings
        self.spark = spark
        self.tuning = Tuning.of(settings)

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
        self,
        table: str,
        df: DataFrame,
        metadata: str,
        partitions: Sequence[str],
        txn: Txn | None = None,
    ) -> Commit:
        """Append ``df`` in one commit (none if it has no rows: Delta makes none, nor for
        a ``txn`` the table holds already)."""
        before = self.version(table)
        writer = (
            df.write.format("delta")
            .mode("append")
            .option("userMetadata", metadata)
            # a column the contract gained (key_b64) joins a table made before
            .option("mergeSchema", "true")
            .partitionBy(*partitions)
        )
        if txn is not None:
            writer = writer.options(txnAppId=txn[0], txnVersion=str(txn[1]))
        writer.save(self.path(table))
        return self._last_commit(table, before)

    def overwrite(
        self, table: str, df: DataFrame, metadata: str, partitions: Sequence[str]
    ) -> Commit:
        """Replace the table's rows with ``df`` in one commit (``rebuild``)."""
        before = self.version(table)
        (
            df.write.format("delta")
            .mode("overwrite")
            .option("userMetadata", metadata)
            .option("mergeSchema", "true")  # a table made before takes today's columns
            .partitionBy(*partitions)
            .save(self.path(table))
        )
        return self._last_commit(table, before)

    def upsert(
        self, table: str, changes: DataFrame, how: Upsert, metadata: str, txn: Txn | None = None
    ) -> Commit:
        """Commit processed rows (``transforms.processed_changes``): a MERGE when some
        replace rows in the table, else an append; no commit when there are none, or
        when the table holds ``txn`` already."""
        changes = changes.persist()
        try:
            counts = {r[0]: r[1] for r in changes.groupBy(T.UPDATE_FLAG).count().collect()}
            if counts.get(True):
                before = self.version(table)
                self._merge(table, changes.select(*how.columns), how, metadata, txn)
                commit = self._last_commit(table, before)
                if commit.version == before:  # skipped: another writer made it
                    return commit
                # the MERGE's own counts: a row it updated or inserted
                return Commit(commit.version, counts.get(False, 0), counts[True])
            if counts.get(False):  # only new rows (the usual day): nothing to match
                rows = T.for_processed_write(changes)
                return self.append(table, rows, metadata, how.partitions, txn)
            return Commit(None)
        finally:
            changes.unpersist()

    def version(self, table: str) -> int | None:
        return table_version(self.settings, table)

    def _last_commit(self, table: str, before: int | None) -> Commit:
        """The commit after version ``before``, with the rows it wrote (none: no commit)."""
        dt = open_table(self.settings, table)
        if dt is None or (before is not None and dt.version() <= before):
            return Commit(before)
        metrics = dt.history(1)[0].get("operationMetrics") or {}
        return Commit(dt.version(), inserted=int(metrics.get("numOutputRows", 0)))

    def _merge(
        self, table: str, source: DataFrame, how: Upsert, metadata: str, txn: Txn | None
    ) -> None:
        """Delta's MERGE in SQL: Spark Connect has Delta's SQL extension, not its
        DeltaTable API. The view is this session's only, dropped after."""
        view = f"stockpipe_merge_{table}"
        source.createOrReplaceTempView(view)
        keys = [f"t.`{c}` = s.`{c}`" for c in how.keys]
        parts = [f"(t.`interval` = '{i}' AND t.`year` >= {y})" for i, y in how.years.items()]
        cond = " AND ".join([*keys, "(" + " OR ".join(parts) + ")"])
        cols = ", ".join(f"`{c}`" for c in how.columns)
        values = ", ".join(f"s.`{c}`" for c in how.columns)
        updates = ", ".join(f"`{c}` = s.`{c}`" for c in how.columns)
        sql = (
            f"MERGE INTO delta.`{self.path(table)}` AS t USING {view} AS s ON {cond} "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
        )
        conf = {USER_METADATA: metadata}
        if txn is not None:  # SQL's way to Delta's idempotent writes
            conf |= {TXN_APP_ID: txn[0], TXN_VERSION: str(txn[1])}
        try:
            with session_conf(self.spark, conf):
                self.spark.sql(sql).collect()
        finally:
            self.spark.catalog.dropTempView(view)


def table_version(settings: Settings, table: str) -> int | None:
    """The table's latest version (None: not made yet), read from its log by
    ``deltalake``: a fraction of what a Spark query on the log costs."""
    dt = open_table(settings, table)
    return None if dt is None else dt.version()


def mark(
    settings: Settings,
    table: str,
    metadata: str,
    empty: Callable[[], pa.Table],
    partitions: Sequence[str],
    *,
    clear: bool = False,
    txn: Txn | None = None,
) -> Commit:
    """A commit with no rows that carries ``metadata`` (Spark's writer makes none for
    no rows; ``deltalake`` does, without Spark), and makes the table if missing.
    ``clear``: the commit also removes every row the table holds. None is made for a
    ``txn`` the table holds already (as Spark's idempotent writes skip it)."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    dt = open_table(settings, table)  # one read of the log: written through, then asked
    transactions = None
    if txn is not None:
        held = None if dt is None else dt.transaction_version(txn[0])
        if held is not None and held >= txn[1]:
            return Commit(None)
        transactions = [Transaction(app_id=txn[0], version=txn[1])]
    write_deltalake(
        table_uri(settings, table) if dt is None else dt,
        empty(),
        mode="overwrite" if clear else "append",
        schema_mode="merge",  # a column the contract gained joins a table made before
        partition_by=list(partitions),
        # a table made here records its changes, as the tables Spark makes do
        configuration={CDF_PROPERTY: "true"},
        storage_options=storage_options(settings),
        commit_properties=CommitProperties(
            custom_metadata={"userMetadata": metadata}, app_transactions=transactions
        ),
    )
    return Commit(table_version(settings, table) if dt is None else dt.version())


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
