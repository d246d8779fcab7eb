"""The Spark batch job: Kafka ``stock.bars`` -> raw/ -> processed/ (+ quarantine/), as Delta tables.

Run it from ``notebooks/spark_batch.ipynb``, or ``stockpipe batch``.

Exactly once, with no offset log of its own: every commit of a table records,
beside its rows, the next Kafka offset per partition that the table holds
(``stockpipe.tables``). A run reads from where the tables left off to the topic's
end (in slices of ``max_offsets_per_trigger``). Each micro-batch:

1. appends the records as received to ``raw/bars`` (partitioned by ingest date);
2. parses and validates them once; failures are appended to ``quarantine/bars``
   with every reason;
3. MERGEs the valid bars into ``processed/bars`` by (symbol, interval, ts), the
   latest ingestion winning. Derived columns are recomputed incrementally: per
   symbol and interval, the run reads the bars from the longest window before the
   earliest changed bar on, and writes only the rows whose values change.

Each table takes from a slice only the records beyond its own offsets, so a run
that died between two commits is finished by the next one without doubling a
row. One job writes these tables at a time: it holds their leases (``stockpipe.lease``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stockpipe.config import Settings
from stockpipe.lake import ZONES, zone
from stockpipe.lease import Lease, check_all, hold
from stockpipe.offsets import TopicState, check_topic, reset_offsets, topic_state
from stockpipe.schemas import BAR_KEY, KAFKA_SOURCE_DDL, PARTITION_COLUMNS, PROCESSED_COLUMNS
from stockpipe.spark import transforms as T
from stockpipe.spark.batch_io import Scan, TableIO, Txn, Upsert, mark
from stockpipe.spark.records import beyond, kafka_records, raw_from_kafka
from stockpipe.spark.session import get_spark, scheduler_pool, session_conf
from stockpipe.spark.tuning import Tuning
from stockpipe.tables import (
    TopicProgress,
    commit_metadata,
    ensure_tables,
    kafka_progress,
    open_table,
    row_count,
)

if TYPE_CHECKING:  # only the notebook's tables need pandas: the job starts without it
    import pandas as pd

log = logging.getLogger(__name__)

#: The tables the job writes (lake zone names); it holds their leases while it runs.
TABLES = ("raw_bars", "quarantine_bars", "processed_bars")

#: Partition columns of each table.
PARTITIONS: dict[str, tuple[str, ...]] = {
    "raw_bars": ("ingest_date",),
    "quarantine_bars": ("quarantine_date",),
    "processed_bars": PARTITION_COLUMNS,
}

#: Fair-scheduler pools of the job (``tuning.POOLS``): the check and the merge, which
#: the run waits for, and the raw-zone write, needed only before the run ends.
MAIN_POOL = "batch_main"
RAW_POOL = "batch_raw"


@dataclass
class BatchJobReport:
    """What one run of the job did."""

    topic: str
    records_read: int = 0
    raw_rows: int = 0
    valid_rows: int = 0
    processed_rows_written: int = 0
    processed_total: int = 0
    duplicates_removed: int = 0
    quarantined: Counter = field(default_factory=Counter)
    partitions_touched: set[str] = field(default_factory=set)
    batches: int = 0
    seconds: float = 0.0
    noop: bool = False
    quarantined_rows: int = 0

    def summary(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            ("records read from Kafka", self.records_read),
            ("raw rows written", self.raw_rows),
            ("valid bars", self.valid_rows),
            ("rows quarantined", self.quarantined_rows),
            ("duplicates removed", self.duplicates_removed),
            ("processed rows written", self.processed_rows_written),
            ("processed rows in table", self.processed_total),
            ("partitions touched", len(self.partitions_touched)),
            ("micro-batches", self.batches),
            ("duration (s)", round(self.seconds, 1)),
        ]
        return pd.DataFrame(rows, columns=["metric", "value"])

    def quarantine_summary(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            sorted(self.quarantined.items(), key=lambda kv: -kv[1]), columns=["reason", "rows"]
        )

    def __str__(self) -> str:
        if self.noop:
            return f"nothing new on {self.topic} ({self.seconds:.1f} s)"
        return (
            f"{self.records_read} records read from {self.topic}: {self.raw_rows} raw, "
            f"{self.valid_rows} valid, {self.quarantined_rows} quarantined, "
            f"{self.duplicates_removed} duplicates removed, {self.processed_rows_written} "
            f"processed rows written in {len(self.partitions_touched)} partitions "
            f"({self.processed_total} in the table), {self.seconds:.1f} s"
        )


# Where the job is in a topic (no Spark needed) --------------------------------------------


@dataclass(frozen=True)
class Slice:
    """The offsets one micro-batch reads (``start`` inclusive, ``end`` exclusive)."""

    number: int
    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def records(self) -> int:
        return sum(end - self.start[p] for p, end in self.end.items())


#: The tables whose offsets say where the job starts: quarantine is not counted, as it
#: is written only when a record fails (its own offsets keep a replay from doubling it).
START_TABLES = ("raw_bars", "processed_bars")
COMMAND = "stockpipe batch"


def pending_records(settings: Settings, topic: str | None = None) -> int:
    """Records on the topic beyond what the job has processed (no Spark needed)."""
    return topic_state(settings, topic or settings.topic_bars, TABLES).pending(START_TABLES)


def plan_slices(
    topic: str, start: dict[int, int], end: dict[int, int], limit: int | None = None
) -> Iterator[Slice]:
    """The micro-batches from ``start`` to ``end``, at most ``limit`` records each
    (shared out over partitions in proportion to what each has pending)."""
    start = dict(start)
    number = 0
    while pending := {p: end[p] - start[p] for p in end if end[p] > start[p]}:
        total = sum(pending.values())
        share = 1.0 if not limit or limit >= total else limit / total
        stop = dict(start)
        for p, n in pending.items():
            stop[p] += max(1, int(n * share))
        yield Slice(number, topic, dict(start), stop)
        start, number = stop, number + 1


# The job ---------------------------------------------------------------------------------


@dataclass
class BatchCensus:
    """One micro-batch in figures (from ``transforms.census``), gathered in one Spark job."""

    records: int
    quarantined: Counter
    #: valid rows per interval: (earliest ts, latest ts, rows)
    valid: dict[str, tuple[datetime, datetime, int]]

    @classmethod
    def of(cls, rows: list) -> BatchCensus:
        quarantined: Counter = Counter()
        valid: dict[str, tuple[datetime, datetime, int]] = {}
        for r in rows:
            if r.reason:
                for reason in r.reason.split("; "):
                    quarantined[reason] += r.rows
            else:
                valid[r.interval] = (r.first_ts, r.last_ts, r.rows)
        return cls(sum(r.rows for r in rows), quarantined, valid)

    @property
    def quarantined_rows(self) -> int:
        return self.records - sum(n for *_, n in self.valid.values())

    def partitions(self) -> set[str]:
        """The processed partitions the batch's valid bars fall in."""
        return {
            f"interval={i}/year={y}"
            for i, (lo, hi, _) in self.valid.items()
            for y in range(lo.year, hi.year + 1)
        }


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Log how long one step of a micro-batch took (long work shows progress)."""
    t0 = time.perf_counter()
    yield
    log.info("  %s (%.1f s)", what, time.perf_counter() - t0)


class BarsBatchJob:
    """Kafka -> raw -> processed for one topic; ``run()`` processes what is new."""

    def __init__(self, settings: Settings, spark: SparkSession, topic: str | None = None) -> None:
        self.settings = settings
        self.spark = spark
        self.topic = topic or settings.topic_bars
        self.paths = {t: zone(settings, t, spark=True) for t in TABLES}
        self.report = BatchJobReport(topic=self.topic)
        self.now = datetime.now(UTC)
        self.leases: list[Lease] = []
        self.state: TopicState | None = None
        self.tuning = Tuning.of(settings)
        self.io = TableIO(settings, spark)

    # progress ---------------------------------------------------------------------------
    def _moved(self, table: str, end: dict[int, int]) -> TopicProgress:
        """``table``'s place in this topic once it holds everything before ``end``
        (never behind where it is: a replay may read less than a table has)."""
        assert self.state is not None
        return self.state.progress(table).advanced(end, self.state.topic_id)

    def _metadata(self, table: str, end: dict[int, int]) -> str:
        """The commit metadata that moves ``table`` to ``end`` in this topic."""
        assert self.state is not None
        return commit_metadata({**self.state.tables[table], self.topic: self._moved(table, end)})

    def _txn(self, table: str, end: dict[int, int]) -> Txn:
        """The idempotent-write key of the commit that moves ``table`` to ``end``: a
        writer that passed its lease check and then stalled past a takeover finds the
        table holding it already, and Delta skips its commit."""
        return self._moved(table, end).transaction(self.topic)

    def _advance(self, table: str, end: dict[int, int]) -> None:
        """Note that ``table`` now holds everything of this topic before ``end``."""
        assert self.state is not None
        self.state.tables[table][self.topic] = self._moved(table, end)

    def _behind(self, table: str) -> dict[int, int]:
        assert self.state is not None
        return self.state.progress(table).offsets

    # per micro-batch --------------------------------------------------------------------
    def process_batch(self, batch: DataFrame, part: Slice) -> None:
        """One micro-batch: every value is parsed and checked once.

        The flagged rows are cached without the record text of valid rows (which
        only the raw zone needs, and it is written straight from Kafka); the
        quarantine and the processed merge are cut from that cache.
        """
        t0 = time.perf_counter()
        # The raw zone (from Kafka again: caching every value costs more than
        # re-reading) is written by a second Spark job in the low-priority pool,
        # whose tasks fill the cores the check and the merge leave idle.
        with ThreadPoolExecutor(1, thread_name_prefix="raw-zone") as pool:
            flagged = T.slim_flagged(T.flag_bars(T.parse_bars(raw_from_kafka(batch)), self.now))
            flagged = flagged.persist()
            try:
                census_query = T.census(flagged)
                raw_written = pool.submit(self._write_raw, batch, part)
                census = BatchCensus.of(census_query.collect())
                self.report.records_read += census.records
                log.info(
                    "batch %s: %d records read and checked (%.1f s)",
                    part.number,
                    census.records,
                    time.perf_counter() - t0,
                )
                valid, quarantine = T.split_flagged(flagged, self.now)
                if census.quarantined_rows:
                    with _step("quarantine written"):
                        self._write_quarantine(quarantine, census, part)
                with _step("processed zone merged"):
                    self._merge_processed(valid, census, part)
                raw_written.result()
            finally:
                flagged.unpersist()
        self.report.batches += 1
        log.info(
            "batch %s: %d records in %.1f s", part.number, census.records, time.perf_counter() - t0
        )

    def _append(self, df: DataFrame, table: str, part: Slice) -> None:
        """Append a batch's rows to a table, with the offsets it then holds, in one commit."""
        check_all(self.leases)
        metadata, txn = self._metadata(table, part.end), self._txn(table, part.end)
        self.io.append(table, df, metadata, PARTITIONS[table], txn)
        self._advance(table, part.end)

    def _write_raw(self, batch: DataFrame, part: Slice) -> None:
        behind = self._behind("raw_bars")
        todo = sum(max(0, e - max(part.start[p], behind.get(p, 0))) for p, e in part.end.items())
        if not todo:  # a replay: the raw zone has this slice already
            return
        with scheduler_pool(self.spark, RAW_POOL), _step("raw zone written"):
            raw = raw_from_kafka(batch).filter(beyond(behind))
            self._append(raw, "raw_bars", part)
            self.report.raw_rows += todo

    def _write_quarantine(self, quarantine: DataFrame, census: BatchCensus, part: Slice) -> None:
        q = quarantine.filter(beyond(self._behind("quarantine_bars"))).withColumn(
            "quarantine_date", F.to_date("quarantined_at")
        )
        self._append(q, "quarantine_bars", part)
        self.report.quarantined.update(census.quarantined)
        self.report.quarantined_rows += census.quarantined_rows

    def _merge_processed(self, valid: DataFrame, census: BatchCensus, part: Slice) -> None:
        new_rows = valid.filter(beyond(self._behind("processed_bars"))).select(*T.VALID_COLUMNS)
        n_valid = sum(n for *_, n in census.valid.values())
        self.report.valid_rows += n_valid
        if not census.valid:
            self._record_progress("processed_bars", part)
            return
        self.report.partitions_touched.update(census.partitions())
        years = self._context_years(census)
        existing = self._context(census, new_rows)
        check_all(self.leases)
        metadata = self._metadata("processed_bars", part.end)
        txn = self._txn("processed_bars", part.end)
        if existing is None:  # nothing of these intervals yet: the rows go in as they are
            out = T.for_processed_write(T.add_derived(T.dedupe_bars(new_rows)))
            commit = self.io.append(
                "processed_bars", out, metadata, PARTITIONS["processed_bars"], txn
            )
        else:
            # corrections: one MERGE commits them with the new bars; new bars only
            # (the usual day) are appended
            how = Upsert((*BAR_KEY, "year"), years, PROCESSED_COLUMNS, PARTITIONS["processed_bars"])
            changes = T.processed_changes(new_rows, existing)
            commit = self.io.upsert("processed_bars", changes, how, metadata, txn)
            existing.unpersist()
        if not commit.rows:
            self._record_progress("processed_bars", part)
        self._advance("processed_bars", part.end)
        # every valid bar either added a row or met one already there
        self.report.duplicates_removed += n_valid - commit.inserted
        self.report.processed_rows_written += commit.rows

    def _record_progress(self, table: str, part: Slice) -> None:
        """A batch gave ``table`` no rows: record its offsets in a commit of their own.

        Delta makes no commit for an empty write, so without it the table would stay
        behind and the next run would read the same records again. A table not made
        yet is made, empty, by the commit.
        """
        if all(self._behind(table).get(p, -1) >= o for p, o in part.end.items()):
            return
        check_all(self.leases)
        metadata = self._metadata(table, part.end)
        empty = lambda: self._empty(table).toArrow()  # noqa: E731
        txn = self._txn(table, part.end)
        mark(self.settings, table, metadata, empty, PARTITIONS[table], txn=txn)
        self._advance(table, part.end)

    def _empty(self, table: str) -> DataFrame:
        """No rows, in the columns the job writes to ``table``."""
        kafka = self.spark.createDataFrame([], KAFKA_SOURCE_DDL)
        if table == "raw_bars":
            return raw_from_kafka(kafka)
        flagged = T.slim_flagged(T.flag_bars(T.parse_bars(raw_from_kafka(kafka)), self.now))
        valid, quarantine = T.split_flagged(flagged, self.now)
        if table == "quarantine_bars":
            return quarantine.withColumn("quarantine_date", F.to_date("quarantined_at"))
        return T.for_processed_write(T.add_derived(T.dedupe_bars(valid)))

    def _intervals_held(self) -> set[str]:
        """The intervals processed/bars holds rows of (its partition values; no data read)."""
        dt = open_table(self.settings, "processed_bars")
        if dt is None:
            return set()
        return {p["interval"] for p in dt.partitions()}

    @staticmethod
    def _context_years(census: BatchCensus) -> dict[str, int]:
        """Per touched interval, the first processed partition year a merge must see."""
        return {i: (lo - T.lookback(i)).year for i, (lo, _, _) in census.valid.items()}

    def _context(self, census: BatchCensus, new_rows: DataFrame) -> DataFrame | None:
        """The processed rows a merge of this batch must see (cached), or None if none exist.

        Per touched symbol and interval, the rows from a lookback before the batch's
        earliest bar on: windows look back up to T.LOOKBACK_BARS bars. A symbol with
        fewer bars than that in the lookback (new, or after a long gap) gets every
        older bar of its own too.
        """
        if not self._intervals_held() & set(census.valid):
            return None
        bounds = {i: lo - T.lookback(i) for i, (lo, _, _) in census.valid.items()}
        firsts = T.first_new(new_rows).collect()
        symbols = {i: tuple(sorted({r.symbol for r in firsts if r.interval == i})) for i in bounds}
        existing = self.io.scan(
            "processed_bars",
            [Scan(i, symbols[i], since=lo) for i, lo in bounds.items() if symbols[i]],
            PROCESSED_COLUMNS,
        ).persist()
        schema = "symbol string, interval string, t0 timestamp"
        short = T.short_of_context(existing, self.spark.createDataFrame(firsts, schema)).collect()
        if short:
            older = [
                Scan(i, syms, before=lo)
                for i, lo in bounds.items()
                if (syms := tuple(sorted({r.symbol for r in short if r.interval == i})))
            ]
            extra = self.io.scan("processed_bars", older, PROCESSED_COLUMNS)
            combined = existing.unionByName(extra).persist()
            existing.unpersist()
            existing = combined
        return existing

    # run --------------------------------------------------------------------------------
    def run(
        self, *, max_offsets_per_trigger: int | None = None, reset_topic: str | None = None
    ) -> BatchJobReport:
        """Read every record of the topic that the tables do not hold yet."""
        t0 = time.perf_counter()
        job = f"spark batch job on {self.topic}"
        with self._leases(job) as leases:
            self.leases = leases
            self.state = topic_state(self.settings, self.topic, TABLES)
            if reset_topic:
                self._reset(reset_topic)
            check_topic(self.state, START_TABLES, COMMAND)
            start = self.state.start(START_TABLES)
            for part in plan_slices(self.topic, start, self.state.end, max_offsets_per_trigger):
                with (
                    session_conf(self.spark, self.tuning.batch_conf()),
                    scheduler_pool(self.spark, MAIN_POOL),
                ):
                    batch = self.io.read(self.topic, part.start, part.end)
                    self.process_batch(batch, part)
        self.report.noop = self.report.batches == 0
        self.report.processed_total = row_count(self.settings, "processed_bars")
        self.report.seconds = time.perf_counter() - t0
        log.info("%s", self.report)
        return self.report

    def rebuild(self) -> BatchJobReport:
        """Make processed/ and quarantine/ again from raw/ alone, atomically each.

        For when Kafka's retention has dropped the records, or the transform
        changed. Every record raw/ holds is checked and merged as a run from
        Kafka would, with the raw zone's Kafka coordinates breaking ties, so the
        result is the table those runs give; each table takes raw/'s offsets.
        """
        t0 = time.perf_counter()
        with self._leases("rebuild of processed/bars from raw/bars") as leases:
            self.leases = leases
            progress = kafka_progress(self.settings, "raw_bars")
            raw = self.spark.read.format("delta").load(self.paths["raw_bars"])
            flagged = T.slim_flagged(
                T.flag_bars(T.parse_bars(raw_from_kafka(kafka_records(raw))), self.now)
            ).persist()
            try:
                census = BatchCensus.of(T.census(flagged).collect())
                log.info("rebuild: %d raw records read and checked", census.records)
                valid, quarantine = T.split_flagged(flagged, self.now)
                metadata = commit_metadata(progress)
                check_all(self.leases)
                q = quarantine.withColumn("quarantine_date", F.to_date("quarantined_at"))
                self.io.overwrite("quarantine_bars", q, metadata, PARTITIONS["quarantine_bars"])
                processed = T.add_derived(T.dedupe_bars(valid.select(*T.VALID_COLUMNS)))
                check_all(self.leases)
                out = T.for_processed_write(processed)
                self.io.overwrite("processed_bars", out, metadata, PARTITIONS["processed_bars"])
            finally:
                flagged.unpersist()
        self.report.records_read = census.records
        self.report.valid_rows = census.records - census.quarantined_rows
        self.report.quarantined.update(census.quarantined)
        self.report.quarantined_rows = census.quarantined_rows
        self.report.processed_total = row_count(self.settings, "processed_bars")
        self.report.processed_rows_written = self.report.processed_total
        self.report.duplicates_removed = self.report.valid_rows - self.report.processed_total
        self.report.batches = 1
        self.report.seconds = time.perf_counter() - t0
        log.info("rebuild: %s", self.report)
        return self.report

    def _leases(self, job: str):
        s = self.settings
        return hold(
            s, [ZONES[t] for t in TABLES], job=job, wait_s=s.lease_wait_s, ttl_s=s.lease_ttl_s
        )

    def _reset(self, where: str) -> None:
        """Move every table to the topic's first (``earliest``) or next (``latest``) offsets."""
        assert self.state is not None
        offsets = reset_offsets(self.state, where)
        log.warning("resetting %s to its %s offsets %s", self.topic, where, offsets)
        for table in TABLES:
            moved = self.state.progress(table).reset(offsets, self.state.topic_id)
            check_all(self.leases)
            metadata = commit_metadata({**self.state.tables[table], self.topic: moved})
            empty = lambda t=table: self._empty(t).toArrow()  # noqa: E731
            mark(self.settings, table, metadata, empty, PARTITIONS[table])
            self.state.tables[table][self.topic] = moved


def run_batch_job(
    settings: Settings,
    topic: str | None = None,
    *,
    spark: SparkSession | None = None,
    max_offsets_per_trigger: int | None = None,
    reset_topic: str | None = None,
) -> BatchJobReport:
    """Process whatever arrived on ``topic`` since the last run."""
    ensure_tables(settings)  # every zone exists from the first job on, empty until written
    topic = topic or settings.topic_bars
    if spark is None and not reset_topic:
        t0 = time.perf_counter()
        state = topic_state(settings, topic, TABLES)
        check_topic(state, START_TABLES, COMMAND)
        if state.pending(START_TABLES) == 0:  # no Spark for nothing new
            report = BatchJobReport(topic=topic, noop=True)
            report.processed_total = row_count(settings, "processed_bars")
            report.seconds = time.perf_counter() - t0
            log.info("%s", report)
            return report
    own = spark is None
    spark = spark or get_spark(settings, "stockpipe-batch")
    try:
        return BarsBatchJob(settings, spark, topic).run(
            max_offsets_per_trigger=max_offsets_per_trigger, reset_topic=reset_topic
        )
    finally:
        if own:
            spark.stop()  # releases the session's cache and views on the server
