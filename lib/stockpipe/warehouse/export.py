"""The export: what changed in the lake's Delta tables into the warehouse, exactly once.

For each warehouse table and each of its lake sources, one transaction:

1. read the recorded (Delta table id, version) of the source from the warehouse;
2. read the source's change data feed from the next version to the current one
   (or, with nothing recorded, another table id, or the feed gone, a snapshot:
   a full reload, which says why);
3. bulk-load the rows into a staging table through ADBC;
4. upsert them into the target by its key (one statement per kind of change), or
   for a full reload replace the target's rows;
5. move the recorded version on, from the version read in 1 only, and commit.

A crash anywhere before the commit leaves the warehouse as it was, and the rerun
reads the same range again; a concurrent export that committed first makes this
one's step 5 update no row, so it rolls back and starts over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from stockpipe.changefeed import ensure_change_feed, read_changes, read_snapshot
from stockpipe.config import Settings
from stockpipe.errors import ChangeFeedUnavailable, ConcurrentExportError
from stockpipe.lake import ZONES
from stockpipe.tables import open_table
from stockpipe.warehouse import changes as C
from stockpipe.warehouse.connection import connect, resolve_target
from stockpipe.warehouse.dialects import DELETED, Dialect, StateRow, dialect_for
from stockpipe.warehouse.tables import COUNT_SCHEMA, QUARANTINE_DATE, WarehouseTable, resolve

log = logging.getLogger(__name__)

#: Tries of one source's export when concurrent exports keep getting there first.
ATTEMPTS = 3


@dataclass
class SourceExport:
    """What the export did for one lake source of one warehouse table."""

    table: str
    source: str
    #: incremental | full | unchanged | skipped
    mode: str = "unchanged"
    from_version: int | None = None
    to_version: int | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_deleted: int = 0
    #: rows of the target the upsert inserted or updated (unchanged rows are not)
    rows_written: int = 0
    reason: str = ""
    seconds: float = 0.0
    #: where the time went: reading the lake, the bulk load, the upsert and commit
    read_s: float = 0.0
    stage_s: float = 0.0
    apply_s: float = 0.0

    def __str__(self) -> str:
        head = f"{self.table} <- {self.source}"
        if self.mode == "skipped":
            return f"{head}: skipped ({self.reason})"
        if self.mode == "unchanged":
            return f"{head}: nothing new (version {self.to_version}, {self.seconds:.1f} s)"
        span = (
            f"versions {self.from_version}..{self.to_version}"
            if self.mode == "incremental"
            else f"version {self.to_version}"
        )
        why = f" because {self.reason}" if self.reason else ""
        read = "change rows" if self.mode == "incremental" else "rows"
        return (
            f"{head}: {self.mode} export of {span}{why}: {self.rows_read} {read} read, "
            f"{self.rows_loaded} staged, {self.rows_written} written, {self.rows_deleted} "
            f"deleted ({self.seconds:.1f} s)"
        )


@dataclass
class ExportReport:
    target: str
    sources: list[SourceExport] = field(default_factory=list)
    #: rows per warehouse table after the export
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [str(s) for s in self.sources]

    def __str__(self) -> str:
        return "\n".join([*self.lines(), f"export to {self.target} done in {self.seconds:.1f} s"])

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "sources": [asdict(s) for s in self.sources],
            "counts": self.counts,
            "seconds": self.seconds,
        }

    def summary(self):
        import pandas as pd

        return pd.DataFrame([asdict(s) for s in self.sources])


@dataclass
class Plan:
    """What one source's export loads: the staged rows and how they are applied."""

    mode: str
    rows: pa.Table
    rows_read: int
    reason: str = ""


# Planning (reads the lake only) ---------------------------------------------------------


def _source_columns(spec: WarehouseTable, dt: Any) -> tuple[str, ...]:
    if spec.columns is not None:
        return spec.columns
    return tuple(pa.schema(dt.schema().to_arrow()).names)


def target_schema(spec: WarehouseTable, dt: Any) -> pa.Schema:
    """The warehouse table's columns (Arrow types, from the Delta schema)."""
    if spec.kind == "counts":
        return COUNT_SCHEMA
    schema = pa.schema(dt.schema().to_arrow())
    return pa.schema([schema.field(c) for c in _source_columns(spec, dt)])


def plan_full(spec: WarehouseTable, source: str, dt: Any, reason: str) -> Plan:
    if spec.kind == "counts":
        date = QUARANTINE_DATE[source]
        snap = read_snapshot(dt, [date, "reason"])
        rows = C.count_changes(snap, ZONES[source], date, snapshot=True)
        return Plan("full", rows, snap.num_rows, reason)
    snap = read_snapshot(dt, _source_columns(spec, dt))
    return Plan("full", C.snapshot_rows(snap, _source_columns(spec, dt)), snap.num_rows, reason)


def plan_incremental(spec: WarehouseTable, source: str, dt: Any, start: int, end: int) -> Plan:
    if spec.kind == "counts":
        date = QUARANTINE_DATE[source]
        feed = read_changes(dt, source, start, end, [date, "reason"])
        return Plan("incremental", C.count_changes(feed, ZONES[source], date), feed.num_rows)
    columns = _source_columns(spec, dt)
    feed = read_changes(dt, source, start, end, columns)
    return Plan("incremental", C.latest_changes(feed, spec.key, columns), feed.num_rows)


def plan(spec: WarehouseTable, source: str, dt: Any, state: tuple[str, int] | None) -> Plan | None:
    """What to load for ``dt`` (loaded at the version to export) given the recorded
    state; None when the warehouse holds that version already."""
    table_id, version = dt.metadata().id, dt.version()
    if state is None:
        return plan_full(spec, source, dt, "nothing was exported before")
    if state[0] != table_id:
        return plan_full(spec, source, dt, f"{ZONES[source]} was made again (a new table id)")
    if state[1] == version:
        return None
    if state[1] > version:
        return plan_full(
            spec, source, dt, f"the warehouse holds version {state[1]}, the table is at {version}"
        )
    try:
        return plan_incremental(spec, source, dt, state[1] + 1, version)
    except ChangeFeedUnavailable as exc:
        log.warning("%s: %s: full reload", ZONES[source], exc)
        return plan_full(spec, source, dt, f"its change data feed is gone ({exc.reason})")


# Loading (the warehouse's transaction) ---------------------------------------------------


class Loader:
    """One warehouse connection and its dialect; every statement goes through here."""

    def __init__(self, conn: Any, dialect: Dialect, schema: str) -> None:
        self.conn, self.dialect, self.schema = conn, dialect, schema

    def execute(self, sql: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return max(cur.rowcount, 0)

    def fetchone(self, sql: str) -> tuple | None:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()

    def ensure_tables(self, spec: WarehouseTable, schema: pa.Schema) -> None:
        """Schema, target and state table (committed on their own: DDL, idempotent)."""
        d = self.dialect
        for sql in (
            d.create_schema(self.schema),
            d.create_state_table(self.schema),
            d.create_table(self.schema, spec.name, schema, spec.key),
        ):
            self.execute(sql)
        self.conn.commit()

    def state(self, spec: WarehouseTable, source: str) -> tuple[str, int] | None:
        row = self.fetchone(self.dialect.select_state(self.schema, spec.name, ZONES[source]))
        self.conn.commit()  # a read: no transaction left open
        return None if row is None else (str(row[0]), int(row[1]))

    def stage(self, spec: WarehouseTable, rows: pa.Table) -> str:
        """Bulk-load ``rows`` (ADBC ingest) into a new staging table; its name."""
        d = self.dialect
        stage = f"stage_{spec.name}"
        for sql in d.create_stage(self.schema, stage, spec.name):
            self.execute(sql)
        data = rows.rename_columns([d.column_name(c) for c in rows.column_names])
        with self.conn.cursor() as cur:
            cur.adbc_ingest(d.column_name(stage), data, mode="append", temporary=d.temporary_stage)
        return stage

    def apply(self, spec: WarehouseTable, source: str, stage: str, p: Plan) -> tuple[int, int]:
        """Upsert (or for a full reload, replace) the target from the stage:
        (rows written, rows deleted)."""
        d = self.dialect
        columns = [c for c in p.rows.column_names if c != DELETED]
        if p.mode == "full":
            scope = (spec.scope, ZONES[source]) if spec.scope else None
            delete, insert = d.replace(self.schema, spec.name, stage, columns, scope)
            self.execute(delete)
            return self.execute(insert), 0
        statements = d.upsert(
            self.schema, spec.name, stage, columns, spec.key, additive=spec.additive
        )
        counts = [self.execute(sql) for sql in statements]
        if len(counts) == 2:  # DELETE then INSERT ... ON CONFLICT
            return counts[1], counts[0]
        return counts[0], 0  # one MERGE: its count covers every kind

    def record(
        self,
        spec: WarehouseTable,
        source: str,
        dt: Any,
        p: Plan,
        was: tuple[str, int] | None,
    ) -> None:
        d = self.dialect
        row = StateRow(
            spec.name, ZONES[source], dt.metadata().id, dt.version(), p.mode, p.rows.num_rows
        )
        if was is None:
            self.execute(d.insert_state(self.schema, row))
            return
        if self.execute(d.update_state(self.schema, row, was=was)) != 1:
            raise ConcurrentExportError(
                f"{spec.name} <- {ZONES[source]}: another export recorded a version first"
            )

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def count(self, spec: WarehouseTable) -> int:
        row = self.fetchone(f"SELECT COUNT(*) FROM {self.dialect.table(self.schema, spec.name)}")
        self.conn.commit()
        return int(row[0]) if row else 0


def export_source(
    settings: Settings, loader: Loader, spec: WarehouseTable, source: str
) -> SourceExport:
    """Export one lake source of one warehouse table (see the module's steps)."""
    t0 = time.perf_counter()
    result = SourceExport(spec.name, ZONES[source])
    if open_table(settings, source) is None:
        result.mode, result.reason = "skipped", "no table yet"
        return result
    ensure_change_feed(settings, source)
    for attempt in range(1, ATTEMPTS + 1):
        dt = open_table(settings, source)  # the version this attempt exports
        loader.ensure_tables(spec, target_schema(spec, dt))
        was = loader.state(spec, source)
        result.to_version = dt.version()
        t_read = time.perf_counter()
        p = plan(spec, source, dt, was)
        result.read_s = time.perf_counter() - t_read
        if p is None:
            result.seconds = time.perf_counter() - t0
            return result
        result.mode, result.reason, result.rows_read = p.mode, p.reason, p.rows_read
        result.from_version = was[1] + 1 if p.mode == "incremental" and was else None
        try:
            t_stage = time.perf_counter()
            if p.rows.num_rows or p.mode == "full":
                stage = loader.stage(spec, p.rows)
                result.stage_s = time.perf_counter() - t_stage
                result.rows_written, result.rows_deleted = loader.apply(spec, source, stage, p)
            # commits without row changes (OPTIMIZE, property commits) only move the version
            loader.record(spec, source, dt, p, was)
            loader.commit()
            result.apply_s = time.perf_counter() - t_stage - result.stage_s
        except ConcurrentExportError:
            loader.rollback()
            if attempt == ATTEMPTS:
                raise
            log.info("%s: another export got there first: starting over", ZONES[source])
            continue
        except BaseException:
            loader.rollback()
            raise
        result.rows_loaded = p.rows.num_rows
        break
    result.seconds = time.perf_counter() - t0
    return result


def export(
    settings: Settings,
    tables: str | list[str] | None = None,
    *,
    target: str | None = None,
    connection: Any = None,
    log_line: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export the warehouse tables ``tables`` (default all) to ``target`` (default the
    ``warehouse`` setting). ``connection``: an open DB-API connection to use instead."""
    t0 = time.perf_counter()
    name = resolve_target(settings, target)
    dialect = dialect_for(name)
    specs = resolve(tables)
    schema = settings.snowflake_schema if name == "snowflake" else settings.warehouse_schema
    conn = connection if connection is not None else connect(settings, name)
    report = ExportReport(name)
    try:
        loader = Loader(conn, dialect, schema)
        for spec in specs:
            for source in spec.sources:
                done = export_source(settings, loader, spec, source)
                report.sources.append(done)
                log.info("%s", done)
                if log_line:
                    log_line(str(done))
            if any(s.table == spec.name and s.mode != "skipped" for s in report.sources):
                report.counts[spec.name] = loader.count(spec)
    finally:
        if connection is None:
            conn.close()
    report.seconds = time.perf_counter() - t0
    return report
