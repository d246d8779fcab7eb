"""The Spark batch job: Kafka ``stock.bars`` -> raw/ -> processed/ (+ quarantine/).

Run it from ``notebooks/spark_batch.ipynb``, or ``python -m stockpipe.spark.batch``.

Incremental: the job keeps an offset log in the lake
(``checkpoints/spark_batch/<topic>/batches/``). Before it reads a micro-batch it
logs the exact offset range (from where the last applied batch ended to the
topic's end, or a slice of it); Spark's Kafka source then reads that range as a
plain batch query. Each micro-batch:

1. writes the records as received to ``raw/bars/ingest_date=…/batch=…``;
2. parses and validates them; failures go to ``quarantine/bars/…`` with reasons;
3. merges the valid bars into ``processed/bars``: for the symbols touched, the
   whole history is re-read, de-duplicated (latest ingestion wins) and its
   derived columns recomputed, so an incremental run gives exactly what one big
   run would; the affected (interval, year) partitions are written to a fresh
   run directory and published by replacing the table manifest (one atomic PUT);
4. records the batch as applied in the same manifest, once the raw zone has it.

A run that fails before step 4 leaves its logged range unapplied: the next run
reads exactly that range again (the batch name, from its offsets, is the same, so
raw and quarantine files are replaced, not doubled), then goes on. Nothing lost,
nothing doubled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fsspec import AbstractFileSystem
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stockpipe.config import Settings
from stockpipe.kafka import offset_bounds
from stockpipe.lake import filesystem, zone
from stockpipe.spark import transforms as T
from stockpipe.spark.session import (
    default_parallelism,
    get_spark,
    kafka_reader,
    scheduler_pool,
)
from stockpipe.table import Table, new_run_id

if TYPE_CHECKING:  # only the notebook's tables need pandas: the job starts without it
    import pandas as pd

log = logging.getLogger(__name__)

#: Fair-scheduler pools of the job (fairscheduler.xml). The check and the merge
#: are what the run waits for: their tasks take free cores first, and the
#: raw-zone write, needed only before the commit, runs on what they leave.
MAIN_POOL = "batch_main"
RAW_POOL = "batch_raw"

#: Kafka read tasks per core. One task per topic partition (3 here, on 2 cores)
#: left a core idle behind the last task of each read; 3 per core keep both busy
#: to the end of it.
READ_TASKS_PER_CORE = 3
#: Records a read task gets at least: a small batch keeps one task per partition.
MIN_RECORDS_PER_READ_TASK = 50_000

#: Options of every write of the job. Each task moves its files into place as it
#: ends: on S3 a move is a copy, and Hadoop's default committer moves each file
#: twice (for the task, then for the job, after the last task). Readers see files
#: only once the manifest names them, and a failed write is never published.
WRITE_OPTIONS = {"mapreduce.fileoutputcommitter.algorithm.version": "2"}


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


# Offsets: a log of micro-batches in the lake (no Spark needed) ----------------------------


@dataclass(frozen=True)
class BatchPlan:
    """The offsets one micro-batch reads (``start`` inclusive, ``end`` exclusive)."""

    number: int
    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def records(self) -> int:
        return sum(end - self.start[p] for p, end in self.end.items())

    @property
    def key(self) -> str:
        """The batch's name in the lake: the same whenever the same range is read."""
        text = ";".join(
            f"{self.topic}:{p}:{self.start[p]}-{end - 1}"
            for p, end in sorted(self.end.items())
            if end > self.start[p]
        )
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def done(self, applied: set[str]) -> bool:
        """Nothing of it is left to read: it was applied, or it holds no record."""
        return self.key in applied or not self.records

    def to_json(self) -> str:
        return json.dumps(
            {"number": self.number, "topic": self.topic, "start": self.start, "end": self.end}
        )

    @classmethod
    def from_json(cls, text: str) -> BatchPlan:
        d = json.loads(text)
        offsets = [{int(p): int(o) for p, o in d[k].items()} for k in ("start", "end")]
        return cls(int(d["number"]), d["topic"], *offsets)


class OffsetLog:
    """The planned micro-batches of one topic, each logged before it is read."""

    def __init__(
        self, settings: Settings, topic: str, fs: AbstractFileSystem | None = None
    ) -> None:
        self.topic = topic
        self.fs = fs or filesystem(settings)
        self.root = f"{zone(settings, 'checkpoints')}/spark_batch/{topic}"

    def latest(self) -> BatchPlan | None:
        try:
            names = self.fs.ls(f"{self.root}/batches", detail=False)
        except FileNotFoundError:
            return None
        logged = sorted(p for p in names if p.endswith(".json"))
        return BatchPlan.from_json(self.fs.cat(logged[-1]).decode()) if logged else None

    def write(self, plan: BatchPlan) -> None:
        self.fs.pipe(f"{self.root}/batches/{plan.number:010d}.json", plan.to_json().encode())

    def prune(self, keep: int = 50) -> None:
        """Forget old plans: only the latest one is ever read."""
        try:
            logged = sorted(self.fs.ls(f"{self.root}/batches", detail=False))
        except FileNotFoundError:
            return
        if len(logged) > keep:
            self.fs.rm(logged[:-keep])

    def committed(self, applied: set[str]) -> dict[int, int]:
        """Next offset per partition that the job has fully processed."""
        plan = self.latest()
        if plan is None:
            return _structured_streaming_offsets(self.fs, self.root, self.topic)
        return dict(plan.end if plan.done(applied) else plan.start)


def _structured_streaming_offsets(fs: AbstractFileSystem, root: str, topic: str) -> dict[int, int]:
    """Where a lake written by the earlier, Structured Streaming job left off.

    That job kept Spark's checkpoint in the same folder; its last committed
    batch's offsets are where the offset log starts.
    """
    try:
        commits = [
            int(n)
            for p in fs.ls(f"{root}/commits", detail=False)
            if (n := p.rsplit("/", 1)[-1]).isdigit()
        ]
    except FileNotFoundError:
        return {}
    if not commits:
        return {}
    lines = fs.cat(f"{root}/offsets/{max(commits)}").decode().splitlines()
    offsets: dict[int, int] = {}
    for line in lines[2:]:  # "v1", batch metadata, then one JSON per source
        for p, off in json.loads(line).get(topic, {}).items():
            offsets[int(p)] = int(off)
    return offsets


def applied_batches(settings: Settings) -> set[str]:
    return set(
        (Table(settings, "processed_bars").manifest().extra or {}).get("applied_batches", [])
    )


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Next offset per partition that the job has fully processed (from its offset log)."""
    return OffsetLog(settings, topic).committed(applied_batches(settings))


def pending_records(settings: Settings, topic: str | None = None) -> int:
    """Records on the topic beyond what the job has processed (no Spark needed)."""
    topic = topic or settings.topic_bars
    done = committed_offsets(settings, topic)
    first, end = offset_bounds(settings, topic)
    return sum(max(0, e - max(done.get(p, 0), first[p])) for p, e in end.items())


def plan_batches(
    offsets: OffsetLog,
    applied: set[str],
    first: dict[int, int],
    end: dict[int, int],
    limit: int | None = None,
) -> Iterator[BatchPlan]:
    """The micro-batches to read, each logged before it is yielded.

    First the latest logged batch again if it was never applied (a run failed
    midway), then new ranges up to ``end``, at most ``limit`` records each
    (shared out over partitions in proportion to what each has pending).
    """
    last = offsets.latest()
    if last is None:
        start = _structured_streaming_offsets(offsets.fs, offsets.root, offsets.topic)
        number = 0
    elif last.done(applied):
        start, number = dict(last.end), last.number + 1
    else:
        log.warning("batch %s (%s) was not applied: reading it again", last.number, last.key)
        yield last
        start, number = dict(last.end), last.number + 1
    start = {p: start.get(p, first[p]) for p in end}
    lost = {p: (start[p], first[p]) for p in end if start[p] < first[p]}
    if lost:
        raise RuntimeError(
            f"records of {offsets.topic} were deleted by Kafka's retention before the job read "
            f"them (partition: (next unread offset, first offset kept)): {lost}"
        )
    while pending := {p: end[p] - start[p] for p in end if end[p] > start[p]}:
        total = sum(pending.values())
        share = 1.0 if not limit or limit >= total else limit / total
        stop = dict(start)
        for p, n in pending.items():
            stop[p] += max(1, int(n * share))
        plan = BatchPlan(number, offsets.topic, dict(start), stop)
        offsets.write(plan)
        yield plan
        start, number = stop, number + 1


# The job ---------------------------------------------------------------------------------


def read_tasks(records: int, partitions: int, cores: int) -> int | None:
    """How many tasks read a batch of ``records`` from ``partitions`` Kafka partitions
    (Spark's ``minPartitions``); None for one per partition, Spark's own choice."""
    tasks = min(READ_TASKS_PER_CORE * cores, records // MIN_RECORDS_PER_READ_TASK)
    return tasks if tasks > partitions else None


@dataclass
class BatchCensus:
    """One micro-batch in figures (from ``transforms.census``), gathered in one Spark job."""

    records: int
    quarantined: Counter
    #: valid rows per interval: (UTC year of the earliest bar, rows)
    valid: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, rows: list) -> BatchCensus:
        quarantined: Counter = Counter()
        valid: dict[str, tuple[int, int]] = {}
        for r in rows:
            if r.reason:
                for reason in r.reason.split("; "):
                    quarantined[reason] += r.rows
            else:
                valid[r.interval] = (r.first_year, r.rows)
        return cls(sum(r.rows for r in rows), quarantined, valid)

    @property
    def quarantined_rows(self) -> int:
        return self.records - sum(n for _, n in self.valid.values())


@contextmanager
def _session_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """Spark SQL settings for the job's queries only; the session's own come back after."""
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)


#: Settings of the batch job's queries.
JOB_CONF: dict[str, str] = {
    # a cache read a few times within seconds: gathering compression statistics
    # per column cost more than the memory it saves
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # the merge's stages run one task per shuffle partition (4 by default: two
    # per core here); AQE coalesced them into 3 uneven ones, and on 2 cores the
    # last ran alone
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
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
        self.raw = Table(settings, "raw_bars")
        self.quarantine = Table(settings, "quarantine_bars")
        self.processed = Table(settings, "processed_bars")
        self.report = BatchJobReport(topic=self.topic)
        self.now = datetime.now(UTC)

    # per micro-batch --------------------------------------------------------------------
    def read(self, plan: BatchPlan) -> DataFrame:
        """The Kafka records of ``plan``, as Spark's Kafka source gives them."""
        ranges = {
            which: json.dumps({self.topic: {str(p): o for p, o in offsets.items()}})
            for which, offsets in (("startingOffsets", plan.start), ("endingOffsets", plan.end))
        }
        cores = default_parallelism(self.spark)
        if cores and (tasks := read_tasks(plan.records, len(plan.end), cores)):
            ranges["minPartitions"] = str(tasks)
        return kafka_reader(self.spark, self.settings, self.topic).options(**ranges).load()

    def process_batch(self, batch: DataFrame, plan: BatchPlan) -> None:
        """One micro-batch: every value is parsed and checked once.

        The flagged rows are cached without the record text of valid rows (which
        only the raw zone needs, and it is written straight from Kafka); the
        quarantine and the processed merge are cut from that cache.
        """
        t0 = time.perf_counter()
        # The raw zone (from Kafka again: caching every value costs more than
        # re-reading) is written beside the rest, by a second Spark job in the
        # low-priority pool. It starts with the census: its tasks then fill the
        # cores the census and the merge leave idle (a last task running alone,
        # the planning between them) instead of holding both cores while the
        # census waits (Spark does not take a core back from a running task).
        with ThreadPoolExecutor(1, thread_name_prefix="raw-zone") as pool:
            flagged = T.slim_flagged(T.flag_bars(T.parse_bars(T.raw_from_kafka(batch)), self.now))
            flagged = flagged.persist()
            try:
                # fills the cache, and tells all the job needs to know of the batch
                census_query = T.census(flagged)
                raw_written = pool.submit(self._timed_raw, batch, plan.key)
                census = BatchCensus.of(census_query.collect())
                self.report.records_read += census.records
                log.info(
                    "batch %s: %d records read and checked (%.1f s)",
                    plan.number,
                    census.records,
                    time.perf_counter() - t0,
                )
                valid, quarantine = T.split_flagged(flagged, self.now)
                if census.quarantined_rows:
                    with _step("quarantine written"):
                        self._write_quarantine(quarantine, census, plan.key)
                with _step("processed zone merged and published"):
                    # marks the batch applied: only once the raw zone has it
                    self._merge_processed(valid, census, plan.key, raw_written.result)
            finally:
                flagged.unpersist()
        self.report.batches += 1
        log.info(
            "batch %s: %d records in %.1f s", plan.number, census.records, time.perf_counter() - t0
        )

    def _write_partitioned_batch(
        self, table: Table, df: DataFrame, date_col: str, key: str, **options: str
    ) -> dict[str, dict]:
        """Write and publish one batch's rows under ``date_col=…/batch=key``; its manifest entries.

        The batch's directories may hold the files of an earlier, failed run of
        it. The new files go beside them ("append": overwrite's dynamic mode
        would stage every file and rename it into place, which S3 does by
        copying), the manifest then names the new ones only, and the old ones go.
        Rows per directory come from the Parquet footers, so ``df`` is computed once.
        """
        pattern = f"{table.root}/{date_col}=*/batch={key}/*.parquet"
        table.fs.invalidate_cache(table.root)
        earlier = set(table.fs.glob(pattern))
        (
            df.withColumn("batch", F.lit(key))
            .write.mode("append")
            .options(**WRITE_OPTIONS, **options)
            .partitionBy(date_col, "batch")
            .parquet(table.spark_root)
        )
        table.fs.invalidate_cache(table.root)
        files = sorted(set(table.fs.glob(pattern)) - earlier)
        entries: dict[str, dict] = {}
        for f, rows in table.file_rows(files).items():
            d = f.rsplit("/", 1)[0]
            part = d[len(table.root) + 1 :]
            e = entries.setdefault(part, {"dir": d, "files": [], "rows": 0})
            e["files"].append(f)
            e["rows"] += rows
        table.commit(table.manifest(), entries)
        if earlier:
            table.fs.rm(sorted(earlier))
        return entries

    def _timed_raw(self, batch: DataFrame, key: str) -> None:
        with scheduler_pool(self.spark, RAW_POOL), _step("raw zone written"):
            self._write_raw(T.raw_from_kafka(batch), key)

    def _write_raw(self, raw: DataFrame, key: str) -> None:
        # values are unique strings: a dictionary is built, then abandoned (slow),
        # and their min/max (a string comparison per record) serves no reader;
        # zstd's level 1 packs this JSON text as small as level 3, in less time
        options = {
            "parquet.enable.dictionary": "false",
            "parquet.column.statistics.enabled#value": "false",
            "parquet.compression.codec.zstd.level": "1",
        }
        entries = self._write_partitioned_batch(self.raw, raw, "ingest_date", key, **options)
        self.report.raw_rows += sum(e["rows"] for e in entries.values())

    def _write_quarantine(self, quarantine: DataFrame, census: BatchCensus, key: str) -> None:
        q = quarantine.withColumn("quarantine_date", F.to_date("quarantined_at"))
        entries = self._write_partitioned_batch(self.quarantine, q, "quarantine_date", key)
        self.report.quarantined.update(census.quarantined)
        self.report.quarantined_rows += sum(e["rows"] for e in entries.values())

    def _merge_processed(
        self, valid: DataFrame, census: BatchCensus, key: str, before_commit: Callable[[], object]
    ) -> None:
        base = self.processed.manifest()
        first_year = {i: y for i, (y, _) in census.valid.items()}
        applied = [*(base.extra or {}).get("applied_batches", []), key][-1000:]
        if not first_year:
            before_commit()
            self.processed.commit(base, {}, extra={"applied_batches": applied})
            return
        n_valid = sum(n for _, n in census.valid.values())
        self.report.valid_rows += n_valid

        # Existing rows of the touched intervals (the whole history: derived columns
        # look back up to 50 bars, which may cross years).
        files = self.processed.files(base, interval=list(first_year))
        new_rows = valid.select(*T.VALID_COLUMNS)
        if files:
            existing = (
                self.spark.read.option("basePath", self.processed.spark_root)
                .parquet(*[f"s3a://{f}" for f in files])
                .drop("run")
                .withColumn("year", F.col("year").cast("int"))
            )
            symbols = F.broadcast(valid.select("interval", "symbol").distinct())
            hist = existing.join(symbols, ["interval", "symbol"], "left_semi")
            others = existing.join(symbols, ["interval", "symbol"], "left_anti")
            combined = hist.select(*[c for c in T.VALID_COLUMNS if c in hist.columns]).unionByName(
                new_rows, allowMissingColumns=True
            )
        else:
            others = None
            combined = new_rows
        merged = T.add_year(T.add_derived(T.dedupe_bars(combined)))

        # Partitions to rewrite: per touched interval, every year from the first new one.
        cond = F.lit(False)
        for interval, year in first_year.items():
            cond = cond | ((F.col("interval") == interval) & (F.col("year") >= year))
        cols = list(T.PROCESSED_COLUMNS)
        out = merged.filter(cond).select(*cols)
        if others is not None:
            out = out.unionByName(others.filter(cond).select(*cols))
        run = new_run_id()
        target = f"{self.processed.spark_root}/run={run}"
        # a new directory: "append" writes in place (see _write_partitioned_batch)
        T.for_processed_write(out).write.mode("append").options(
            **WRITE_OPTIONS, **T.PROCESSED_PARQUET_OPTIONS
        ).partitionBy(*T.PARTITION_COLUMNS).parquet(target)
        # rows per partition from the footers: no second pass over the data
        entries = self.processed.written_partitions(target, depth=len(T.PARTITION_COLUMNS))
        before_commit()
        new = self.processed.commit(base, entries, extra={"applied_batches": applied})
        # the table held unique keys before; whatever it gained less than n_valid
        # were duplicates (re-sent bars, or corrections that replaced a row)
        self.report.duplicates_removed += base.rows + n_valid - new.rows
        self.report.processed_rows_written += sum(e["rows"] for e in entries.values())
        self.report.partitions_touched.update(entries)
        self.report.processed_total = new.rows

    # run --------------------------------------------------------------------------------
    def run(self, *, max_offsets_per_trigger: int | None = None) -> BatchJobReport:
        """Read every logged-but-unapplied and every new range of the topic."""
        t0 = time.perf_counter()
        offsets = OffsetLog(self.settings, self.topic)
        first, end = offset_bounds(self.settings, self.topic)
        for plan in plan_batches(
            offsets, applied_batches(self.settings), first, end, max_offsets_per_trigger
        ):
            with _session_conf(self.spark, JOB_CONF), scheduler_pool(self.spark, MAIN_POOL):
                self.process_batch(self.read(plan), plan)
        self.report.noop = self.report.batches == 0
        if not self.report.noop:
            offsets.prune()
            self.processed.vacuum(keep_versions=2)
        self.report.processed_total = self.processed.manifest().rows
        self.report.seconds = time.perf_counter() - t0
        log.info("%s", self.report)
        return self.report


def run_batch_job(
    settings: Settings,
    topic: str | None = None,
    *,
    spark: SparkSession | None = None,
    max_offsets_per_trigger: int | None = None,
) -> BatchJobReport:
    """Process whatever arrived on ``topic`` since the last run."""
    if spark is None:
        if pending_records(settings, topic or settings.topic_bars) == 0:
            return BarsBatchJob(settings, None, topic).run()  # type: ignore[arg-type]
        spark = get_spark(settings, "stockpipe-batch")
    return BarsBatchJob(settings, spark, topic).run(max_offsets_per_trigger=max_offsets_per_trigger)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    from stockpipe.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default=None)
    parser.add_argument("--max-offsets-per-trigger", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    print(
        run_batch_job(
            get_settings(), args.topic, max_offsets_per_trigger=args.max_offsets_per_trigger
        )
    )
