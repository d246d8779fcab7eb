"""The streaming job: ticks from Kafka to sliding-window aggregates in the lake.

Two queries read the tick topic and commit each micro-batch with ``foreachBatch``,
exactly once by what each table holds (``stockpipe.spark.stream_commits``): the
tables record their Kafka offsets and the windows written, as the batch job's
tables do, so a query with another name or a new checkpoint neither reads a
record twice nor writes a window twice.

============================  ==============================  =============================
query (``queryName``)         writes (Delta table)            what
============================  ==============================  =============================
``<name>_archive``            ``quarantine/ticks``,           invalid ticks with a reason,
                              ``raw/ticks``                   then every record as received
``<name>``                    ``processed/tick_windows``      windows the watermark closed
============================  ==============================  =============================

Windows are per symbol, sliding (default 1 minute every 15 s), in event time,
with a watermark (default 30 s): a window is written once, in append mode, when
the watermark passes its end; ticks that arrive for a window already closed are
dropped and counted (``late_rows_dropped`` in the metrics). The progress of
every micro-batch of every query goes to the Delta table ``processed/stream_metrics``,
a few batches per commit.

One job writes these four tables at a time (Delta's S3 log store needs a single
writer): the job holds their leases (``stockpipe.lease``) while it runs, and a
second job waits ``--lease-wait`` seconds for them or fails naming the holder.

The transforms are ``stockpipe.spark.tick_transforms``; this module reads the
topic, applies them and writes the tables.

Run it (settings from the environment / ``.env``; a child process runs
``python -m stockpipe.cli stream``)::

    stockpipe stream --mode continuous --duration 600
    stockpipe stream --mode available-now   # the backlog, then stop
    stockpipe stream --window "10 seconds" --slide "5 seconds" \\
        --watermark "5 seconds" --trigger "2 seconds" --name ticks_test

Stop a continuous run with Ctrl-C (or SIGTERM): the queries stop, and a restart
resumes without losing or doubling a record or a window. The windows table holds
one definition (window, slide, watermark): a run asking for another stops with
:class:`WindowDefinitionError` unless told ``--replace-windows``; a tick topic
created again stops it with :class:`TopicResetError` unless told ``--reset-topic``.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from stockpipe.config import Settings
from stockpipe.errors import StreamingError, UnknownNameError
from stockpipe.kafka import require_topic
from stockpipe.lake import ZONES, storage_options, table_uri, zone
from stockpipe.lease import Lease, check_all, hold
from stockpipe.offsets import TopicState, check_topic, reset_offsets, topic_state
from stockpipe.schemas import METRICS_SCHEMA
from stockpipe.spark.batch_io import TableIO
from stockpipe.spark.session import classic_api, driver_session, kafka_stream, scheduler_pool
from stockpipe.spark.stream_commits import (
    ARCHIVE_TABLES,
    ArchiveSink,
    WindowDefinition,
    WindowSeries,
    WindowSink,
    adopt_legacy_offsets,
    open_series,
)
from stockpipe.spark.tick_transforms import (
    future_tolerance,
    parse_ticks,
    valid_ticks,
    validate_ticks,
    window_aggregates,
)
from stockpipe.spark.tuning import Tuning
from stockpipe.tables import ensure_tables
from stockpipe.times import to_utc

log = logging.getLogger(__name__)

RUN_MODES = ("continuous", "available-now")

#: The tables the job writes (lake zone names); it holds their leases while it runs.
TABLES = ("raw_ticks", "quarantine_ticks", "tick_windows", "stream_metrics")


@dataclass(frozen=True)
class StreamOptions:
    """How the job runs. Durations are Spark interval strings ("15 seconds")."""

    window: str = "1 minute"
    slide: str = "15 seconds"
    watermark: str = "30 seconds"
    trigger: str = "5 seconds"
    #: Micro-batch interval of the archive query (continuous mode):
    #: fewer, larger batches leave the cores to the windows query users wait for.
    #: Triggers fire on multiples of their interval, so with the default slide and
    #: watermark these start as windows close and are done before the windows
    #: batch that writes them, ten seconds later (a longer interval's larger batches
    #: ran into that batch: docs/performance.md). None: ``trigger``.
    archive_trigger: str | None = "15 seconds"
    mode: str = "continuous"
    #: Continuous: stop after this long. Available-now: give up after this long.
    duration_s: float | None = None
    name: str = "tick_windows"
    #: Root of the windows query's checkpoints; default ``checkpoints/<name>/`` in the lake.
    checkpoint: str | None = None
    topic: str | None = None
    #: Where a query starts in a partition the tables hold nothing of, and where a new
    #: windows checkpoint starts ("earliest": its windows are then whole).
    starting_offsets: str = "earliest"
    #: Cap on Kafka records per micro-batch (None: all available).
    max_offsets_per_trigger: int | None = None
    #: Partitions of the window state (fixed by the first run of a checkpoint);
    #: None: the session's ``spark.sql.shuffle.partitions``.
    state_partitions: int | None = None
    #: Seconds to wait for another job's leases of the tables before failing
    #: (a crashed job's leases expire by themselves, after ``stockpipe.lease.TTL_S``).
    lease_wait_s: float = 0.0
    #: After the tick topic was deleted and created again: read it from its first
    #: ("earliest") or its next ("latest") offsets, as ``stockpipe batch --reset-topic``.
    reset_topic: str | None = None
    #: Replace the windows table's rows with windows of this run's definition,
    #: computed again from the first tick the topic holds.
    replace_windows: bool = False

    def __post_init__(self) -> None:
        if self.mode not in RUN_MODES:
            raise UnknownNameError("run mode", self.mode, list(RUN_MODES))
        if self.reset_topic not in (None, "earliest", "latest"):
            raise UnknownNameError("topic reset", self.reset_topic, ["earliest", "latest"])

    def definition(self) -> WindowDefinition:
        return WindowDefinition(self.window, self.slide, self.watermark)


# ---------------------------------------------------------------------------------------
# Progress metrics
# ---------------------------------------------------------------------------------------


def progress_row(progress: Any) -> dict[str, Any]:
    """One metrics row from a ``StreamingQueryProgress`` (or its JSON as a dict)."""
    p = progress if isinstance(progress, dict) else dict(progress)
    ops = p.get("stateOperators") or []
    watermark = to_utc((p.get("eventTime") or {}).get("watermark"))
    if watermark is not None and watermark.value == 0:
        watermark = None  # Spark reports epoch 0 until a watermark exists
    ts = to_utc(p.get("timestamp"))
    return {
        "query_name": p.get("name") or "",
        "query_id": str(p.get("id")),
        "run_id": str(p.get("runId")),
        "batch_id": int(p.get("batchId", -1)),
        "timestamp": ts,
        "num_input_rows": int(p.get("numInputRows") or 0),
        "input_rows_per_second": float(p.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_second": float(p.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int(p.get("batchDuration") or 0),
        "watermark": watermark,
        "state_rows": sum(int(o.get("numRowsTotal") or 0) for o in ops),
        "state_memory_bytes": sum(int(o.get("memoryUsedBytes") or 0) for o in ops),
        "late_rows_dropped": sum(int(o.get("numRowsDroppedByWatermark") or 0) for o in ops),
        "durations_ms": dict(p.get("durationMs") or {}),
        "end_offsets": end_offsets(p.get("sources") or []),
        # the metrics table's partition: the UTC day the batch ran
        "date": (ts or pd.Timestamp.now(tz="UTC")).date(),
    }


def end_offsets(sources: list[Any]) -> dict[str, dict[str, int]]:
    """Per topic and partition, the Kafka offset a batch read up to (its sources' ``endOffset``).

    The batch's progress is reported after its commit, so these are the query's
    committed offsets: what the backlog is measured against.
    """
    out: dict[str, dict[str, int]] = {}
    for source in sources:
        end = source.get("endOffset") if isinstance(source, dict) else None
        if isinstance(end, str):
            try:
                end = json.loads(end)
            except ValueError:
                continue
        if not isinstance(end, dict):
            continue
        for topic, parts in end.items():
            if isinstance(parts, dict):
                out.setdefault(topic, {}).update({str(k): int(v) for k, v in parts.items()})
    return out


#: Buffered metrics go to the lake at most this often, every query's rows in one
#: Delta commit (a commit per micro-batch per query would flood the table's log),
#: and once more when the run stops.
METRICS_FLUSH_S = 10.0
#: Rows kept for another try while the lake refuses metrics writes; older ones are dropped.
MAX_PENDING_METRICS = 10_000


def write_metrics(settings: Settings, rows: list[dict[str, Any]]) -> None:
    """Append metrics rows to ``processed/stream_metrics`` in one commit (by ``date``).

    A retried write that had in fact committed leaves duplicates, which the
    reader drops by (query_id, batch_id).
    """
    from deltalake import write_deltalake

    table = pa.Table.from_pylist(
        [{k: row[k] for k in METRICS_SCHEMA.names} for row in rows], schema=METRICS_SCHEMA
    )
    write_deltalake(
        table_uri(settings, "stream_metrics"),
        table,
        mode="append",
        partition_by=["date"],
        storage_options=storage_options(settings),
    )


class ProgressRecorder(StreamingQueryListener):
    """Keeps every micro-batch's progress of our queries: in a queue, and in the lake.

    Spark calls it on its listener thread; the queue hands rows to the thread
    that runs the job (notebook output belongs there), which also calls
    :meth:`flush`, so a slow lake never holds up Spark's listener bus.
    """

    def __init__(
        self, settings: Settings, query_names: set[str], flush_every_s: float = METRICS_FLUSH_S
    ) -> None:
        self.settings = settings
        self.query_names = query_names
        self.flush_every_s = flush_every_s
        self.rows: queue.Queue[dict[str, Any]] = queue.Queue()
        self.errors: list[str] = []
        #: Newest batch id seen per query name.
        self.last_batch: dict[str, int] = {}
        self.written = 0
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()

    def _error(self, exc: Exception) -> None:
        self.errors.append(f"{type(exc).__name__}: {exc}")
        log.warning("stream metrics not written: %s", exc)

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        try:
            row = progress_row(event.progress)
            name = row["query_name"]
            if name not in self.query_names:
                return
            with self._lock:
                self._pending.append(row)
                self.last_batch[name] = max(self.last_batch.get(name, -1), row["batch_id"])
            self.rows.put(row)
        except Exception as exc:  # never let metrics break the stream
            self._error(exc)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass

    def flush(self, *, force: bool = False) -> int:
        """Write the buffered rows if ``flush_every_s`` has passed (or ``force``); rows written.

        A failed write is recorded in :attr:`errors` and its rows kept for the next
        flush: metrics never stop the stream.
        """
        if not force and time.monotonic() - self._flushed_at < self.flush_every_s:
            return 0
        self._flushed_at = time.monotonic()
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows:
            return 0
        try:
            write_metrics(self.settings, rows)
        except BaseException as exc:  # an interrupted write keeps its rows too
            with self._lock:
                kept = rows + self._pending
                self._pending = kept[-MAX_PENDING_METRICS:]
            if not isinstance(exc, Exception):
                raise
            self._error(exc)
            if len(kept) > MAX_PENDING_METRICS:
                self.errors.append(f"{len(kept) - MAX_PENDING_METRICS} metrics rows dropped")
            return 0
        self.written += len(rows)
        return len(rows)


# ---------------------------------------------------------------------------------------
# The job: read, transform, write
# ---------------------------------------------------------------------------------------


def query_names(opts: StreamOptions) -> dict[str, str]:
    """The two query names of a job: windows, archive."""
    return {"windows": opts.name, "archive": f"{opts.name}_archive"}


def checkpoint_root(settings: Settings, opts: StreamOptions) -> str:
    """Where the windows checkpoints live: the option, or ``checkpoints/<name>`` in the lake."""
    root = opts.checkpoint or f"{zone(settings, 'checkpoints', spark=True)}/{opts.name}"
    return root.rstrip("/")


#: Scheduler pool of each query: the windows first, the archive with what is left.
POOLS = {"windows": "stream_windows", "archive": "stream_archive"}
#: The command whose options the job's errors name.
COMMAND = "stockpipe stream"


@dataclass
class StreamPlan:
    """Where a run starts, decided before Spark: the topic checked, the tables' offsets
    and the windows series (both moved first by a reset or a replacement)."""

    state: TopicState
    series: WindowSeries

    def archive_start(self, default: str) -> str:
        """``startingOffsets`` of the archive query: the offsets raw/ticks holds, and
        ``default`` where it holds none (every partition named, as Spark asks)."""
        held = self.state.progress("raw_ticks").offsets
        code = -2 if default == "earliest" else -1
        offsets = {str(p): held.get(p, code) for p in sorted(self.state.end)}
        return json.dumps({self.state.topic: offsets})


def plan_stream(settings: Settings, opts: StreamOptions, leases: list[Lease]) -> StreamPlan:
    """Check the topic and the window definition against the tables (no Spark needed)."""
    topic = opts.topic or settings.topic_ticks
    state = topic_state(settings, topic, ARCHIVE_TABLES)
    adopt_legacy_offsets(settings, state)
    if opts.reset_topic:
        offsets = reset_offsets(state, opts.reset_topic)
        log.warning("resetting %s to its %s offsets %s", topic, opts.reset_topic, offsets)
        ArchiveSink.reset_tables(settings, state, leases, offsets)
    check_topic(state, ("raw_ticks",), COMMAND)
    series = open_series(
        settings, opts.definition(), topic, leases, replace_windows=opts.replace_windows
    )
    return StreamPlan(state, series)


def start_queries(
    spark: SparkSession,
    settings: Settings,
    opts: StreamOptions,
    plan: StreamPlan,
    leases: list[Lease],
    archive_checkpoint: str,
) -> dict[str, StreamingQuery]:
    """Start the archive and windows queries; return them by role.

    ``archive_checkpoint``: a folder of the run's own (the tables keep the archive's
    offsets, so a checkpoint of it outliving the run would only go stale).
    """
    names = query_names(opts)
    for key, value in Tuning.of(settings).streaming_conf().items():
        spark.conf.set(key, value)
    # Timestamps as UTC microseconds, so pyarrow readers get tz-aware columns (not INT96).
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    io = TableIO(settings, spark)
    ahead = future_tolerance(opts.watermark)
    archive = ArchiveSink(io, plan.state, leases, future_tolerance_ms=ahead, pool=POOLS["archive"])
    windows_from = "latest" if opts.reset_topic == "latest" else opts.starting_offsets
    records = read_ticks(spark, settings, opts, windows_from)
    windows = window_aggregates(
        valid_ticks(validate_ticks(parse_ticks(records), future_tolerance_ms=ahead)),
        window=opts.window,
        slide=opts.slide,
        watermark=opts.watermark,
    )
    sink = WindowSink(io, plan.series, plan.state.topic, leases, POOLS["windows"])
    outputs = {
        "archive": (
            read_ticks(spark, settings, opts, plan.archive_start(opts.starting_offsets)),
            archive,
            f"file://{archive_checkpoint}",
        ),
        "windows": (
            windows,
            sink,
            plan.series.checkpoint(checkpoint_root(settings, opts), plan.state.topic_id),
        ),
    }
    queries: dict[str, StreamingQuery] = {}
    shuffle = spark.conf.get("spark.sql.shuffle.partitions")
    if opts.state_partitions:
        spark.conf.set("spark.sql.shuffle.partitions", str(opts.state_partitions))
    try:
        for role, (df, commit, checkpoint) in outputs.items():
            # jobs of a query run in the pool of the thread that starts it
            with scheduler_pool(spark, POOLS[role]):
                queries[role] = _start(
                    df,
                    names[role],
                    commit,
                    checkpoint,
                    None if opts.mode == "available-now" else trigger_of(opts, role),
                )
    except Exception:
        for q in queries.values():
            q.stop()
        raise
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", shuffle)
    return queries


def read_ticks(
    spark: SparkSession, settings: Settings, opts: StreamOptions, starting_offsets: str
) -> DataFrame:
    """The tick topic as a stream of Kafka records."""
    return kafka_stream(
        spark,
        settings,
        opts.topic or settings.topic_ticks,
        starting_offsets=starting_offsets,
        max_offsets_per_trigger=opts.max_offsets_per_trigger,
    )


def trigger_of(opts: StreamOptions, role: str) -> str:
    """The micro-batch interval of a query in continuous mode."""
    return opts.trigger if role == "windows" else (opts.archive_trigger or opts.trigger)


def _start(
    df: DataFrame,
    name: str,
    commit: Callable[[DataFrame, int], None],
    checkpoint: str,
    trigger: str | None,
) -> StreamingQuery:
    """Each micro-batch goes to ``commit`` (exactly once by what the tables hold).

    ``trigger`` None: available-now (the backlog, then stop).
    """
    writer = (
        df.writeStream.queryName(name)
        .outputMode("append")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(commit)
    )
    if trigger is None:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=trigger).start()


@dataclass
class StreamReport:
    """What a run of the job did."""

    mode: str
    seconds: float = 0.0
    stopped_by: str = ""
    batches: dict[str, int] = field(default_factory=dict)
    input_rows: dict[str, int] = field(default_factory=dict)
    late_rows_dropped: int = 0
    watermark: pd.Timestamp | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    metric_errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = ", ".join(
            f"{q}: {self.batches.get(q, 0)} batches / {self.input_rows.get(q, 0)} rows"
            for q in sorted(self.batches)
        )
        return (
            f"{self.mode} run stopped by {self.stopped_by} after {self.seconds:.1f} s; {parts}; "
            f"watermark {self.watermark}; late rows dropped {self.late_rows_dropped}"
        )


def run_stream(
    settings: Settings,
    opts: StreamOptions,
    *,
    spark: SparkSession | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> StreamReport:
    """Run the job until its mode says stop; every batch's progress goes to the lake.

    Continuous: until ``duration_s``, ``stop`` or Ctrl-C. Available-now: until the
    backlog present at start is processed (or ``duration_s`` passes). The job holds
    the leases of :data:`TABLES` throughout; raises :class:`LeaseHeldError` if
    another job holds one past ``opts.lease_wait_s``, :class:`LeaseLostError` if a
    lease is lost while running, :class:`StreamingError` if a query fails.
    """
    # a missing input topic: created, or a clear error before Spark starts (Spark's
    # Kafka source would wait on it forever without a word)
    require_topic(settings, opts.topic or settings.topic_ticks)
    ensure_tables(settings)  # every zone exists from the first job on, empty until written
    tables = [ZONES[t] for t in TABLES]
    job = f"streaming job {opts.name}"
    with hold(settings, tables, job=job, wait_s=opts.lease_wait_s) as leases, classic_api():
        plan = plan_stream(settings, opts, leases)  # a topic or definition error: no Spark
        if spark is None:
            spark = driver_session(settings, f"stockpipe-stream-{opts.name}")
        return _run(spark, settings, opts, plan, leases, on_progress, stop)


def _run(
    spark: SparkSession,
    settings: Settings,
    opts: StreamOptions,
    plan: StreamPlan,
    leases: list[Lease],
    on_progress: Callable[[dict[str, Any]], None] | None,
    stop: threading.Event | None,
) -> StreamReport:
    names = query_names(opts)
    recorder = ProgressRecorder(settings, set(names.values()))
    spark.streams.addListener(recorder)
    report = StreamReport(mode=opts.mode)
    t0 = time.monotonic()
    queries: dict[str, StreamingQuery] = {}
    archive_checkpoint = tempfile.mkdtemp(prefix=f"stockpipe-{opts.name}-archive-")

    def drain() -> None:
        while True:
            try:
                row = recorder.rows.get_nowait()
            except queue.Empty:
                return
            report.metrics.append(row)
            if on_progress is not None:
                on_progress(row)

    def flush(force: bool = False) -> None:
        # a job whose lease was taken over must not write the table any more
        if not any(lease.lost for lease in leases):
            recorder.flush(force=force)

    try:
        queries = start_queries(spark, settings, opts, plan, leases, archive_checkpoint)
        while True:
            drain()
            flush()
            check_all(leases)
            failed = [(r, q) for r, q in queries.items() if q.exception() is not None]
            if failed:
                role, q = failed[0]
                raise StreamingError(names[role], str(q.exception()))
            if not any(q.isActive for q in queries.values()):
                report.stopped_by = "backlog done" if opts.mode == "available-now" else "stopped"
                break
            if opts.duration_s is not None and time.monotonic() - t0 >= opts.duration_s:
                report.stopped_by = "duration"
                break
            if stop is not None and stop.is_set():
                report.stopped_by = "stop"
                break
            queries["windows"].awaitTermination(0.5)
    except KeyboardInterrupt:
        report.stopped_by = "interrupt"
    finally:
        for q in queries.values():
            if q.isActive:
                q.stop()
        _wait_listener(recorder, queries)
        spark.streams.removeListener(recorder)
        drain()
        flush(force=True)
        report.seconds = time.monotonic() - t0
        report.metric_errors = list(recorder.errors)
        _summarise(report, names)
        shutil.rmtree(archive_checkpoint, ignore_errors=True)
    return report


def _wait_listener(recorder: ProgressRecorder, queries: dict[str, StreamingQuery]) -> None:
    """Give the listener thread a moment to receive the last batches' progress."""
    last = {q.name: (q.lastProgress or {}).get("batchId") for q in queries.values()}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = dict(recorder.last_batch)
        if all(b is None or seen.get(n, -1) >= b for n, b in last.items()):
            return
        time.sleep(0.1)


def _summarise(report: StreamReport, names: dict[str, str]) -> None:
    for row in report.metrics:
        q = row["query_name"]
        report.batches[q] = report.batches.get(q, 0) + 1
        report.input_rows[q] = report.input_rows.get(q, 0) + row["num_input_rows"]
        if q == names["windows"]:
            report.late_rows_dropped += row["late_rows_dropped"]
            if row["watermark"] is not None:
                report.watermark = row["watermark"]


def format_progress(row: dict[str, Any]) -> str:
    """One line per micro-batch, for logs and notebooks."""
    wm = row["watermark"].strftime("%H:%M:%S") if row["watermark"] is not None else "-"
    return (
        f"{row['query_name']:<24} batch {row['batch_id']:>5}  in {row['num_input_rows']:>7} rows"
        f"  {row['input_rows_per_second']:>9.0f} in/s  {row['processed_rows_per_second']:>9.0f}"
        f" proc/s  {row['batch_duration_ms']:>6} ms  watermark {wm}  state {row['state_rows']}"
        f"  late {row['late_rows_dropped']}"
    )
