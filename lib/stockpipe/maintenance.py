"""Lake maintenance: compaction (OPTIMIZE) and VACUUM of the Delta tables, with delta-rs.

Streaming micro-batches and daily appends leave many small files; OPTIMIZE
rewrites them into few (``processed/bars`` Z-ordered by symbol, so a one-symbol
read touches few row groups). VACUUM then deletes the files no version within
the retention needs. Both run under the table's lease (one writer per table),
and every commit they make carries the table's latest stockpipe ``userMetadata``
forward: the batch job finds its Kafka offsets in the latest commit that has
them (``tables.kafka_progress``), and maintenance commits must not hide them.
No Spark: ``deltalake`` starts at once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

from stockpipe.config import Settings
from stockpipe.errors import (
    LakeError,
    LeaseHeldError,
    RetentionTooShortError,
    StockpipeError,
    UnknownNameError,
)
from stockpipe.lake import TABLES, ZONES, filesystem, zone
from stockpipe.lease import Lease, check_all, hold
from stockpipe.tables import METADATA_KEY, open_table, parse_metadata, recent_commits

log = logging.getLogger(__name__)

#: VACUUM keeps removed files this long: a reader of any version of the last week
#: (a long query, time travel, a Spark job that listed the table) finds its files.
DEFAULT_RETENTION_HOURS = 168
#: The job name maintenance writes into the leases it takes.
JOB = "lake maintenance"
#: Tables whose compaction also Z-orders by these columns (one-symbol reads skip row groups).
ZORDER: dict[str, tuple[str, ...]] = {"processed_bars": ("symbol",)}

PartitionFilter = list[tuple[str, str, Any]]


# Pure helpers ------------------------------------------------------------------------------


def resolve_tables(names: Iterable[str] | None) -> list[str]:
    """Zone names (``processed_bars``) of the Delta tables asked for; None or empty: all.

    A zone path (``processed/bars``) is accepted too; anything else is an UnknownNameError.
    """
    names = [n.strip() for n in (names or []) if n.strip()]
    if not names:
        return list(TABLES)
    by_path = {ZONES[t]: t for t in TABLES}
    out = []
    for name in names:
        key = name if name in TABLES else by_path.get(name.strip("/"))
        if key is None:
            raise UnknownNameError("Delta table", name, list(TABLES))
        if key not in out:
            out.append(key)
    return out


def check_retention(hours: float, force: bool = False) -> None:
    """Refuse a retention under seven days unless forced (RetentionTooShortError)."""
    if hours < 0:
        raise LakeError(f"a VACUUM retention cannot be negative ({hours:g} h)")
    if hours < DEFAULT_RETENTION_HOURS and not force:
        raise RetentionTooShortError(hours, DEFAULT_RETENTION_HOURS)


def carried_metadata(commits: Iterable[Mapping[str, Any]]) -> str | None:
    """The userMetadata a maintenance commit carries: stockpipe's part of the newest
    commit (history order, newest first) that has one; None if none has."""
    for commit in commits:
        meta = parse_metadata(commit.get("userMetadata"))
        if meta is not None:
            return json.dumps({METADATA_KEY: meta}, sort_keys=True)
    return None


def zorder_filters(
    partition_columns: Sequence[str], files: Iterable[Sequence[Any]]
) -> list[PartitionFilter | None]:
    """Partition filters that select exactly the partitions holding more than one file.

    ``files``: one tuple of partition values per data file. Z-ordering rewrites every
    file it considers, even a partition's only one, so already compacted partitions
    are left out (else each run would rewrite the whole table). One filter per value
    of the leading partition columns, with the last column's values as an ``in`` list,
    so a run makes few commits. An unpartitioned table gives ``[None]`` (the whole
    table) when it has more than one file.
    """
    counts: dict[tuple[Any, ...], int] = {}
    for values in files:
        key = tuple(values)
        counts[key] = counts.get(key, 0) + 1
    if not partition_columns:
        return [None] if sum(counts.values()) > 1 else []
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for key, n in sorted(counts.items(), key=lambda kv: repr(kv[0])):
        if n < 2:
            continue
        if any(v is None for v in key):
            log.info("partition %s has a null value: not Z-ordered", key)
            continue
        groups.setdefault(key[:-1], []).append(key[-1])
    *leading, last = partition_columns
    return [
        [*((c, "=", v) for c, v in zip(leading, lead, strict=True)), (last, "in", values)]
        for lead, values in groups.items()
    ]


#: The metrics `lake history` shows, by the names Spark and delta-rs give them.
KEY_METRICS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("numOutputRows", "num_added_rows"), "rows written"),
    (("numTargetRowsInserted",), "rows inserted"),
    (("numTargetRowsUpdated",), "rows updated"),
    (("numTargetRowsDeleted",), "rows deleted"),
    (
        ("numFiles", "numAddedFiles", "num_added_files", "numFilesAdded", "numTargetFilesAdded"),
        "files added",
    ),
    (
        ("numRemovedFiles", "num_removed_files", "numFilesRemoved", "numTargetFilesRemoved"),
        "files removed",
    ),
    (("numFilesToDelete",), "files to delete"),
    (("numDeletedFiles",), "files deleted"),
)


def key_metrics(metrics: Mapping[str, Any] | None) -> str:
    """The metrics that say what a commit did, e.g. ``rows written 120, files added 3``."""
    metrics = metrics or {}
    parts = []
    for names, label in KEY_METRICS:
        for name in names:
            if metrics.get(name) is not None:
                parts.append(f"{label} {metrics[name]}")
                break
    return ", ".join(parts)


def describe_progress(kafka: Mapping[str, Any] | None) -> str:
    """A commit's Kafka progress as ``topic: p0=12 p1=7``, topics joined by ``; ``."""
    out = []
    for topic, progress in sorted((kafka or {}).items()):
        offsets = (progress or {}).get("offsets", {})
        parts = " ".join(f"p{p}={o}" for p, o in sorted(offsets.items(), key=lambda x: int(x[0])))
        out.append(f"{topic}: {parts or 'no offsets'}")
    return "; ".join(out)


# Results ------------------------------------------------------------------------------------


@dataclass
class OptimizeResult:
    """What OPTIMIZE did to one table."""

    table: str
    files_before: int = 0
    files_after: int = 0
    files_added: int = 0
    files_removed: int = 0
    commits: int = 0
    zorder: tuple[str, ...] = ()

    def __str__(self) -> str:
        how = f"Z-order by {', '.join(self.zorder)}" if self.zorder else "compaction"
        if not self.commits:
            return f"{self.files_before} files, nothing to compact ({how})"
        return (
            f"files {self.files_before} -> {self.files_after} ({how}: "
            f"{self.files_removed} rewritten into {self.files_added})"
        )


@dataclass
class VacuumResult:
    """What VACUUM deleted (or, in a dry run, would delete) from one table."""

    table: str
    retention_hours: float
    dry_run: bool = False
    files: list[str] = field(default_factory=list)

    @property
    def files_removed(self) -> int:
        return 0 if self.dry_run else len(self.files)

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return f"vacuum {verb} {len(self.files)} files (retention {self.retention_hours:g} h)"


@dataclass
class TableReport:
    """One table's maintenance: its results, or why it was skipped or failed."""

    table: str
    optimize: OptimizeResult | None = None
    vacuum: VacuumResult | None = None
    skipped: str = ""  # the table does not exist yet
    held: str = ""  # another job held its lease past the wait
    error: str = ""

    def __str__(self) -> str:
        if self.skipped or self.held or self.error:
            return f"{self.table}: skipped: {self.skipped or self.held or self.error}"
        parts = [str(r) for r in (self.optimize, self.vacuum) if r is not None]
        return f"{self.table}: {'; '.join(parts) or 'nothing done'}"


@dataclass
class MaintenanceReport:
    """Every table's maintenance; ``ok`` unless a lease was held or a table failed."""

    tables: list[TableReport] = field(default_factory=list)

    @property
    def held(self) -> list[TableReport]:
        return [t for t in self.tables if t.held]

    @property
    def failed(self) -> list[TableReport]:
        return [t for t in self.tables if t.error]

    @property
    def ok(self) -> bool:
        return not self.held and not self.failed

    def lines(self) -> list[str]:
        return [str(t) for t in self.tables]

    def to_json(self) -> dict[str, Any]:
        return {"tables": [asdict(t) for t in self.tables], "ok": self.ok}


# The operations ------------------------------------------------------------------------------


def _lease_name(name: str) -> str:
    """The lease of a table is named by its zone path, as the jobs name it."""
    return ZONES[name]


@contextmanager
def _leased(
    settings: Settings, name: str, wait_s: float | None, leases: list[Lease] | None = None
) -> Iterator[list[Lease]]:
    """Hold the table's lease as the jobs do (``wait_s`` None: ``settings.lease_wait_s``)."""
    if leases is not None:  # the caller holds the table's lease already
        yield leases
        return
    wait = settings.lease_wait_s if wait_s is None else wait_s
    with hold(
        settings, [_lease_name(name)], job=JOB, wait_s=wait, ttl_s=settings.lease_ttl_s
    ) as held:
        yield held


def _commit_properties(dt: Any) -> Any:
    """Commit properties that carry the table's latest stockpipe metadata (None if none)."""
    from deltalake import CommitProperties

    text = carried_metadata(recent_commits(dt))
    return CommitProperties(custom_metadata={"userMetadata": text}) if text else None


def _file_count(dt: Any) -> int:
    return len(dt.file_uris())


def _files_by_partition(dt: Any, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    if not columns:
        return [()] * actions.num_rows
    cols = [actions.column(f"partition.{c}").to_pylist() for c in columns]
    return list(zip(*cols, strict=True))


def _delta_error(what: str, name: str, exc: Exception) -> LakeError:
    return LakeError(f"{what} of {ZONES[name]} failed: {exc}")


def optimize(
    settings: Settings,
    name: str,
    *,
    zorder: Sequence[str] | None = None,
    target_size: int | None = None,
    wait_s: float | None = None,
    leases: list[Lease] | None = None,
) -> OptimizeResult | None:
    """Compact a table's small files (Z-ordered by ``zorder``, default :data:`ZORDER`).

    Under the table's lease (waiting up to ``wait_s``, default ``settings.lease_wait_s``,
    else LeaseHeldError); None
    if the table does not exist yet. The rows and the Kafka progress stay the same.
    """
    from deltalake.exceptions import DeltaError

    [name] = resolve_tables([name])
    columns = tuple(ZORDER.get(name, ()) if zorder is None else zorder)
    if open_table(settings, name) is None:
        log.info("%s: no table yet, nothing to optimize", ZONES[name])
        return None
    with _leased(settings, name, wait_s, leases) as held:
        dt = open_table(settings, name)  # the version as of now, under the lease
        result = OptimizeResult(name, files_before=_file_count(dt), zorder=columns)
        props = _commit_properties(dt)
        try:
            if columns:
                partitioning = dt.metadata().partition_columns
                filters = zorder_filters(partitioning, _files_by_partition(dt, partitioning))
                runs: list[Callable[[], dict[str, Any]]] = [
                    lambda f=f: dt.optimize.z_order(
                        columns,
                        partition_filters=f,
                        target_size=target_size,
                        commit_properties=props,
                    )
                    for f in filters
                ]
            else:
                runs = [
                    lambda: dt.optimize.compact(target_size=target_size, commit_properties=props)
                ]
            for run in runs:
                check_all(held)  # never commit once the lease is lost
                before = dt.version()
                metrics = run()
                result.files_added += int(metrics.get("numFilesAdded", 0))
                result.files_removed += int(metrics.get("numFilesRemoved", 0))
                result.commits += dt.version() - before
        except DeltaError as exc:
            raise _delta_error("OPTIMIZE", name, exc) from exc
        result.files_after = _file_count(dt)
    log.info("%s: %s", ZONES[name], result)
    return result


def _existing(settings: Settings, name: str, paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` (relative to the table) that are still in the store.

    delta-rs lists a removed file as a VACUUM candidate until a checkpoint drops its
    tombstone, even once deleted; counting only files that exist keeps the report
    true and spares a run with nothing to delete its two commits.
    """
    paths = list(paths)
    if not paths:
        return []
    root = zone(settings, name)
    present = {unquote(p[len(root) + 1 :]) for p in filesystem(settings).find(root)}
    return [p for p in paths if p in present or unquote(p) in present]


def vacuum(
    settings: Settings,
    name: str,
    retention_hours: float = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    *,
    force: bool = False,
    wait_s: float | None = None,
    leases: list[Lease] | None = None,
) -> VacuumResult | None:
    """Delete the files no version within ``retention_hours`` needs (and unreferenced ones
    older than that, e.g. left by a crashed write); None if the table does not exist.

    Never under 7 days unless ``force``: a reader of a recent version still needs its files.
    Under the table's lease (waiting up to ``wait_s``, else LeaseHeldError).
    """
    from deltalake.exceptions import DeltaError

    [name] = resolve_tables([name])
    check_retention(retention_hours, force)
    if open_table(settings, name) is None:
        log.info("%s: no table yet, nothing to vacuum", ZONES[name])
        return None
    hours = math.ceil(retention_hours)
    options = {"retention_hours": hours, "enforce_retention_duration": not force, "full": True}
    with _leased(settings, name, wait_s, leases) as held:
        dt = open_table(settings, name)
        try:
            candidates = _existing(settings, name, dt.vacuum(dry_run=True, **options))
            result = VacuumResult(name, retention_hours, dry_run=dry_run, files=candidates)
            if candidates and not dry_run:
                check_all(held)
                deleted = set(
                    dt.vacuum(dry_run=False, commit_properties=_commit_properties(dt), **options)
                )
                result.files = [p for p in candidates if p in deleted]
        except DeltaError as exc:
            raise _delta_error("VACUUM", name, exc) from exc
    log.info("%s: %s", ZONES[name], result)
    return result


def maintain(
    settings: Settings,
    tables: Iterable[str] | None = None,
    *,
    retention_hours: float = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    wait_s: float | None = None,
) -> MaintenanceReport:
    """OPTIMIZE then VACUUM every Delta table (or ``tables``) that exists, one lease at a time.

    ``wait_s`` (default ``settings.lease_wait_s``) bounds the waiting for other jobs'
    leases over the whole run (a job such as the streaming one holds several tables).
    A table whose lease stays held, or whose maintenance fails, is reported and the
    others still run; ``report.ok`` says whether all were done. ``dry_run``: no commit
    (nothing is compacted, VACUUM only lists).
    """
    check_retention(retention_hours)
    report = MaintenanceReport()
    total_wait = settings.lease_wait_s if wait_s is None else wait_s
    waited = 0.0
    for name in resolve_tables(tables):
        entry = TableReport(name)
        report.tables.append(entry)
        if open_table(settings, name) is None:
            entry.skipped = "no table yet"
            log.info("%s: no table yet: skipped", ZONES[name])
            continue
        t0 = time.monotonic()
        try:
            budget = max(0.0, total_wait - waited)
            with _leased(settings, name, budget) as held:
                waited += time.monotonic() - t0
                if not dry_run:
                    entry.optimize = optimize(settings, name, leases=held)
                entry.vacuum = vacuum(settings, name, retention_hours, dry_run=dry_run, leases=held)
        except LeaseHeldError as exc:
            waited += time.monotonic() - t0
            entry.held = str(exc)
            log.warning("%s: skipped: %s", ZONES[name], exc)
        except StockpipeError as exc:
            entry.error = str(exc)
            log.error("%s: failed: %s", ZONES[name], exc)
    return report
