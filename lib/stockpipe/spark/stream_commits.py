"""How the streaming job commits its micro-batches: exactly once by what each table
holds, whatever the query's name or checkpoint, as the batch job does.

- ``raw/ticks`` and ``quarantine/ticks`` (the archive query): every commit records, as
  the batch job's do, the next Kafka offset per partition and the topic's id; a
  micro-batch appends only the records beyond the offsets its table holds. The query
  starts from ``raw/ticks``'s offsets, on a checkpoint of the run's own: no offset
  bookkeeping lives outside the tables. Quarantine is committed before raw, so a
  record raw holds has had its quarantine row committed.
- ``processed/tick_windows``: every commit records the window definition, the series
  (a new one when the windows are replaced) and, per topic, the end of the last window
  written. Windows are emitted in watermark order, so every window ending at or before
  that point is in the table; a micro-batch appends only windows ending after it. A
  new checkpoint (a new name, series or topic id) computes its windows from the first
  tick the topic holds, so none is partial, and the cursor keeps any from being written
  twice.

Each commit checks the job's leases right before it (``stockpipe.lease``): a job that
could have lost them never commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from stockpipe.config import Settings
from stockpipe.errors import WindowDefinitionError
from stockpipe.lease import Lease, check_all
from stockpipe.offsets import TopicState
from stockpipe.schemas import TABLE_LAYOUTS
from stockpipe.spark.batch_io import TableIO, mark
from stockpipe.spark.records import beyond, raw_from_kafka
from stockpipe.spark.session import scheduler_pool
from stockpipe.spark.tick_transforms import (
    needs_checking,
    parse_ticks,
    quarantined_ticks,
    validate_ticks,
)
from stockpipe.tables import TopicProgress, commit_metadata, latest_metadata, open_table
from stockpipe.times import to_ms

log = logging.getLogger(__name__)

#: The tables the archive query writes, in the order it commits them.
ARCHIVE_TABLES = ("quarantine_ticks", "raw_ticks")


# ---------------------------------------------------------------------------------------
# raw/ticks and quarantine/ticks
# ---------------------------------------------------------------------------------------


class ArchiveSink:
    """``foreachBatch`` of the archive query: a micro-batch's invalid ticks to
    quarantine, then every record to raw, each table taking only the offsets beyond
    those it holds."""

    def __init__(
        self,
        io: TableIO,
        state: TopicState,
        leases: Sequence[Lease],
        *,
        future_tolerance_ms: int,
        pool: str,
    ) -> None:
        self.io = io
        self.topic = state.topic
        self.topic_id = state.topic_id
        #: per table, what it holds of every topic: the state's, moved by each commit
        self.held = state.tables
        self.leases = leases
        self.future_tolerance_ms = future_tolerance_ms
        self.pool = pool

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        with scheduler_pool(records.sparkSession, self.pool):
            records = records.persist()
            try:
                ends = records.groupBy("partition").agg(F.max("offset") + 1).collect()
                if not ends:
                    return
                end = {int(p): int(o) for p, o in ends}
                tolerance = self.future_tolerance_ms
                checked = validate_ticks(
                    parse_ticks(needs_checking(records, future_tolerance_ms=tolerance)),
                    future_tolerance_ms=tolerance,
                )
                quarantine = quarantined_ticks(checked)
                self._commit("quarantine_ticks", quarantine, end)
                self._commit("raw_ticks", raw_from_kafka(records), end)
            finally:
                records.unpersist()

    def _commit(self, table: str, rows: DataFrame, end: dict[int, int]) -> None:
        """Append the rows beyond the table's offsets, moving it to ``end``, in one commit
        (none when there are none: the records gave it nothing, or it holds them)."""
        held = self.held[table].get(self.topic) or TopicProgress()
        done = held.offsets
        moved = held.advanced(end, self.topic_id)
        metadata = commit_metadata({**self.held[table], self.topic: moved})
        check_all(self.leases)
        commit = self.io.append(
            table,
            rows.filter(beyond(done)),
            metadata,
            TABLE_LAYOUTS[table].partitions,
            moved.transaction(self.topic),
        )
        if commit.inserted:
            self.held[table][self.topic] = moved

    @staticmethod
    def reset_tables(
        settings: Settings, state: TopicState, leases: Sequence[Lease], offsets: dict[int, int]
    ) -> None:
        """Move both tables to ``offsets`` of the topic as it is now (``--reset-topic``),
        in a commit with no rows each."""
        for table in ARCHIVE_TABLES:
            held = state.tables[table]
            moved = state.progress(table).reset(offsets, state.topic_id)
            check_all(leases)
            metadata = commit_metadata({**held, state.topic: moved})
            layout = TABLE_LAYOUTS[table]
            mark(settings, table, metadata, layout.schema.empty_table, layout.partitions)
            held[state.topic] = moved


def adopt_legacy_offsets(settings: Settings, state: TopicState) -> None:
    """Give the archive tables the offsets raw/ticks's rows of the topic show, for a
    table written before its commits recorded them (the next commit records them)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if state.tables["raw_ticks"]:  # its commits record offsets (of some topic)
        return
    dt = open_table(settings, "raw_ticks")
    if dt is None:
        return
    rows = dt.to_pyarrow_dataset().to_table(
        columns=["partition", "offset"], filter=ds.field("topic") == state.topic
    )
    if rows.num_rows == 0:
        return
    last = rows.group_by("partition").aggregate([("offset", "max")])
    ends = pc.add(last.column("offset_max"), 1).to_pylist()
    held = dict(zip(last.column("partition").to_pylist(), ends, strict=True))
    log.info("raw/ticks holds %s up to %s (from its rows)", state.topic, held)
    for table in ARCHIVE_TABLES:
        state.tables[table].setdefault(state.topic, TopicProgress(held, None))


# ---------------------------------------------------------------------------------------
# processed/tick_windows
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowDefinition:
    """What a window is: its length, how often one starts, how late a tick may be."""

    window: str
    slide: str
    watermark: str

    def same_as(self, other: WindowDefinition) -> bool:
        return self.key() == other.key()

    def key(self) -> tuple[int, int, int]:
        return (to_ms(self.window), to_ms(self.slide), to_ms(self.watermark))

    def to_json(self) -> dict[str, str]:
        return {"window": self.window, "slide": self.slide, "watermark": self.watermark}

    @classmethod
    def from_json(cls, d: dict[str, str]) -> WindowDefinition:
        return cls(d["window"], d["slide"], d["watermark"])

    def __str__(self) -> str:
        return (
            f"windows of {self.window} every {self.slide} with a {self.watermark} watermark "
            f"(--window '{self.window}' --slide '{self.slide}' --watermark '{self.watermark}')"
        )


@dataclass(frozen=True)
class WindowSeries:
    """The windows table's state: its definition, its series and, per topic, the end
    (UTC microseconds) up to which every window of the topic's ticks is written."""

    definition: WindowDefinition
    series: str
    through: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "definition": self.definition.to_json(),
            "series": self.series,
            "through_us": dict(sorted(self.through.items())),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WindowSeries:
        through = {t: int(v) for t, v in (d.get("through_us") or {}).items()}
        return cls(WindowDefinition.from_json(d["definition"]), str(d["series"]), through)

    def checkpoint(self, root: str, topic_id: str | None) -> str:
        """The windows query's checkpoint: its state belongs to this series and to this
        incarnation of the topic (a topic created again starts a checkpoint anew)."""
        return f"{root}/windows-{self.series}-{topic_id or 'unknown'}"


def open_series(
    settings: Settings,
    definition: WindowDefinition,
    topic: str,
    leases: Sequence[Lease],
    *,
    replace_windows: bool = False,
) -> WindowSeries:
    """The windows table's series for this run; a table without one gets it now.

    A table holding another definition stops the run with :class:`WindowDefinitionError`
    unless ``replace_windows``: then one commit removes its rows and starts a new series.
    A table written before its commits recorded a series keeps its windows: the cursor
    starts at the last window end it holds.
    """
    held = latest_metadata(settings, "tick_windows").get("windows")
    if held is not None and not replace_windows:
        series = WindowSeries.from_json(held)
        if not series.definition.same_as(definition):
            raise WindowDefinitionError(str(series.definition), str(definition))
        return series
    series = WindowSeries(definition, uuid.uuid4().hex[:12])
    if held is None and not replace_windows and (last := _last_window_end(settings)):
        series = replace(series, through={topic: last})
    check_all(leases)
    layout = TABLE_LAYOUTS["tick_windows"]
    mark(
        settings,
        "tick_windows",
        commit_metadata({}, windows=series.to_json()),
        layout.schema.empty_table,
        layout.partitions,
        clear=replace_windows,
    )
    log.info(
        "windows table %s: series %s, %s",
        "replaced" if replace_windows else "started",
        series.series,
        definition,
    )
    return series


def _last_window_end(settings: Settings) -> int | None:
    """The latest window end the table holds (UTC µs), from the log's file statistics."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dt = open_table(settings, "tick_windows")
    if dt is None:
        return None
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0 or "max.window_end" not in actions.column_names:
        return None
    last = pc.max(actions.column("max.window_end")).cast(pa.timestamp("us", "UTC"))
    return None if not last.is_valid else int(last.cast(pa.int64()).as_py())


class WindowSink:
    """``foreachBatch`` of the windows query: the windows the watermark closed, but
    those the table holds already, appended in one commit that moves the cursor."""

    def __init__(
        self, io: TableIO, series: WindowSeries, topic: str, leases: Sequence[Lease], pool: str
    ) -> None:
        self.io = io
        self.series = series
        self.topic = topic
        self.leases = leases
        self.pool = pool

    def __call__(self, windows: DataFrame, batch_id: int) -> None:
        through = self.series.through.get(self.topic)
        rows = windows
        if through is not None:
            rows = rows.filter(F.unix_micros("window_end") > F.lit(through))
        with scheduler_pool(windows.sparkSession, self.pool):
            rows = rows.persist()
            try:
                last = rows.agg(F.max(F.unix_micros("window_end"))).first()[0]
                if last is None:
                    return
                series = replace(self.series, through={**self.series.through, self.topic: last})
                metadata = commit_metadata({}, windows=series.to_json())
                check_all(self.leases)
                txn = (f"stockpipe:windows:{self.topic}:{series.series}", last)
                self.io.append(
                    "tick_windows", rows, metadata, TABLE_LAYOUTS["tick_windows"].partitions, txn
                )
                self.series = series
            finally:
                rows.unpersist()
