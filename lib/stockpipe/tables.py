"""The lake's Delta tables outside Spark: create them, open them, their history, their
row counts, and where in each Kafka topic a table's last commit left off.

Every table exists from ``stockpipe init`` (or the first job) on, empty until written:
:func:`ensure_tables` makes each one as its job writes it (``schemas.TABLE_LAYOUTS``).

The batch job records, in the commit metadata of every write (``userMetadata``),
the next offset per partition of each topic the table holds. The offsets are
committed atomically with the rows: a table never holds a record its offsets do
not cover, nor covers one it does not hold. No other offset log exists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stockpipe.config import Settings
from stockpipe.lake import TABLES, ZONES, table_uri

log = logging.getLogger(__name__)

#: The key of stockpipe's part of a commit's ``userMetadata`` (a JSON object).
METADATA_KEY = "stockpipe"
#: How far back the history is searched for a commit with stockpipe's metadata
#: (maintenance commits carry it forward, so it is nearly always the latest).
HISTORY_DEPTH = 100
#: Commits read at a time while searching: the latest one nearly always has it.
HISTORY_PAGES = (1, 10)


#: The job a lease names while :func:`ensure_tables` creates its table.
CREATE_JOB = "creating an empty table"


def table_exists(settings: Settings, name: str) -> bool:
    """Whether zone ``name`` is a Delta table yet (one listing of its log, no state read)."""
    from deltalake import DeltaTable

    from stockpipe.lake import storage_options

    return DeltaTable.is_deltatable(table_uri(settings, name), storage_options(settings))


def ensure_tables(
    settings: Settings,
    names: Iterable[str] = TABLES,
    *,
    say: Callable[[str], None] | None = None,
) -> list[str]:
    """Create each of the tables ``names`` (zone names) that is missing, empty, with the
    schema, partition columns and properties its job writes it with; the zones created.

    A table is created under its lease (one writer per table) and only if still
    missing then, in a commit without stockpipe's metadata (so it holds no Kafka
    offsets: :func:`kafka_progress` gives {}). A table that exists is left alone,
    and so is one whose lease a job holds: that job writes it, and the next call
    creates it if it is still missing. Safe to run at once from several processes.
    ``say``: told which zones were created (e.g. ``print``).
    """
    from deltalake import DeltaTable

    from stockpipe.changefeed import CDF_PROPERTY
    from stockpipe.errors import LeaseHeldError
    from stockpipe.lake import storage_options
    from stockpipe.lease import check_all, hold
    from stockpipe.schemas import TABLE_LAYOUTS

    created = []
    for name in [n for n in names if not table_exists(settings, n)]:
        layout = TABLE_LAYOUTS[name]
        try:
            with hold(settings, [ZONES[name]], job=CREATE_JOB) as leases:
                if table_exists(settings, name):  # another process made it meanwhile
                    continue
                check_all(leases)
                DeltaTable.create(
                    table_uri(settings, name),
                    layout.schema,
                    mode="ignore",  # a writer that takes no lease made it first
                    partition_by=list(layout.partitions),
                    configuration={CDF_PROPERTY: "true"} if layout.change_feed else None,
                    storage_options=storage_options(settings),
                )
        except LeaseHeldError as exc:
            log.info("%s not created: %s", ZONES[name], exc)
            continue
        created.append(ZONES[name])
    if created:
        log.info("created empty tables %s", ", ".join(created))
        if say is not None:
            say(f"created empty tables {', '.join(created)}")
    return created


def open_table(
    settings: Settings,
    name: str,
    *,
    version: int | None = None,
    as_of: datetime | str | None = None,
) -> Any | None:
    """A zone's ``deltalake.DeltaTable`` (at ``version`` or ``as_of``); None if not made yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from stockpipe.lake import storage_options

    try:
        dt = DeltaTable(table_uri(settings, name), storage_options=storage_options(settings))
    except TableNotFoundError:
        return None
    if version is not None:
        dt.load_as_version(version)
    elif as_of is not None:
        dt.load_as_version(as_of if isinstance(as_of, datetime) else datetime.fromisoformat(as_of))
    return dt


def row_count(settings: Settings, name: str) -> int:
    """Rows in a table's current version, from the log's file statistics (no data read)."""
    dt = open_table(settings, name)
    if dt is None:
        return 0
    actions = dt.get_add_actions(flatten=True)
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table(actions)
    if table.num_rows == 0:
        return 0
    return int(pc.sum(table.column("num_records")).as_py() or 0)


@dataclass
class TopicProgress:
    """Where a table is in one topic: the next offset per partition, the topic's id, and
    how many times it was reset (``--reset-topic`` may move the offsets back)."""

    offsets: dict[int, int] = field(default_factory=dict)
    topic_id: str | None = None
    epoch: int = 0

    def to_json(self) -> dict[str, Any]:
        offsets = {str(p): o for p, o in self.offsets.items()}
        return {"topic_id": self.topic_id, "offsets": offsets, "epoch": self.epoch}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TopicProgress:
        offsets = {int(p): int(o) for p, o in d.get("offsets", {}).items()}
        return cls(offsets, d.get("topic_id"), int(d.get("epoch", 0)))

    def advanced(self, end: dict[int, int], topic_id: str | None) -> TopicProgress:
        """Here once the table holds everything before ``end`` too (never behind where
        it is: a replay may read less than a table has)."""
        ahead = {p: max(o, self.offsets.get(p, o)) for p, o in end.items()}
        return TopicProgress({**self.offsets, **ahead}, topic_id, self.epoch)

    def reset(self, offsets: dict[int, int], topic_id: str | None) -> TopicProgress:
        """At ``offsets``, wherever they are: a new epoch."""
        return TopicProgress(dict(offsets), topic_id, self.epoch + 1)

    def transaction(self, topic: str) -> tuple[str, int]:
        """Delta's idempotent-write key (app id, version) of a commit that leaves a table
        here: the topic's incarnation and epoch, and the sum of its next offsets, which
        only grows within them. Delta skips a commit whose version another writer's
        commit already reached."""
        app_id = f"stockpipe:kafka:{topic}:{self.topic_id}:{self.epoch}"
        return app_id, sum(self.offsets.values())


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """stockpipe's part of a commit's userMetadata, or None if it has none."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    part = data.get(METADATA_KEY) if isinstance(data, dict) else None
    return part if isinstance(part, dict) else None


def commit_metadata(progress: dict[str, TopicProgress], **parts: Any) -> str:
    """The userMetadata of a commit that leaves the table at ``progress`` (and ``parts``,
    e.g. the streaming job's ``windows``)."""
    kafka = {t: p.to_json() for t, p in sorted(progress.items())}
    return json.dumps({METADATA_KEY: {"kafka": kafka, **parts}}, sort_keys=True)


def latest_metadata(settings: Settings, name: str) -> dict[str, Any]:
    """stockpipe's part of the table's latest commit that has one ({} if none)."""
    dt = open_table(settings, name)
    if dt is None:
        return {}
    for commit in recent_commits(dt):
        meta = parse_metadata(commit.get("userMetadata"))
        if meta is not None:
            return meta
    return {}


def kafka_progress(settings: Settings, name: str) -> dict[str, TopicProgress]:
    """Per topic, where the table's latest commit with stockpipe's metadata left off.

    A table not made yet, or written by nothing that records offsets, gives {}.
    """
    kafka = latest_metadata(settings, name).get("kafka", {})
    return {t: TopicProgress.from_json(p) for t, p in kafka.items()}


def recent_commits(dt: Any) -> Iterator[dict[str, Any]]:
    """A table's commits, newest first, up to HISTORY_DEPTH, read a few at a time
    (each commit is one object to fetch, and a search nearly always stops at the first)."""
    seen = 0
    for limit in (*(n for n in HISTORY_PAGES if n < HISTORY_DEPTH), HISTORY_DEPTH):
        commits = dt.history(limit)
        yield from commits[seen:]
        if len(commits) < limit:
            return
        seen = len(commits)


def history(settings: Settings, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The table's latest commits, newest first: version, time, operation and metrics."""
    dt = open_table(settings, name)
    if dt is None:
        return []
    out = []
    for c in dt.history(limit):
        meta = parse_metadata(c.get("userMetadata"))
        out.append(
            {
                "version": c.get("version"),
                "timestamp": datetime.fromtimestamp(c.get("timestamp", 0) / 1000).isoformat(
                    timespec="seconds"
                ),
                "operation": c.get("operation"),
                "parameters": c.get("operationParameters"),
                "metrics": c.get("operationMetrics"),
                "kafka": (meta or {}).get("kafka"),
            }
        )
    return out
