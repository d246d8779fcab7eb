"""The lake's Delta tables outside Spark: open them, their history, their row counts,
and where in each Kafka topic a table's last commit left off.

The batch job records, in the commit metadata of every write (``userMetadata``),
the next offset per partition of each topic the table holds. The offsets are
committed atomically with the rows: a table never holds a record its offsets do
not cover, nor covers one it does not hold. No other offset log exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stockpipe.config import Settings
from stockpipe.lake import table_uri

#: The key of stockpipe's part of a commit's ``userMetadata`` (a JSON object).
METADATA_KEY = "stockpipe"
#: How far back the history is searched for a commit with stockpipe's metadata
#: (maintenance commits carry it forward, so it is nearly always the latest).
HISTORY_DEPTH = 100
#: Commits read at a time while searching: the latest one nearly always has it.
HISTORY_PAGES = (1, 10)


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
    """Where a table is in one topic: the next offset per partition, and the topic's id."""

    offsets: dict[int, int] = field(default_factory=dict)
    topic_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"topic_id": self.topic_id, "offsets": {str(p): o for p, o in self.offsets.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TopicProgress:
        return cls({int(p): int(o) for p, o in d.get("offsets", {}).items()}, d.get("topic_id"))


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


def commit_metadata(progress: dict[str, TopicProgress]) -> str:
    """The userMetadata of a commit that leaves the table at ``progress``."""
    kafka = {t: p.to_json() for t, p in sorted(progress.items())}
    return json.dumps({METADATA_KEY: {"kafka": kafka}}, sort_keys=True)


def kafka_progress(settings: Settings, name: str) -> dict[str, TopicProgress]:
    """Per topic, where the table's latest commit with stockpipe's metadata left off.

    A table not made yet, or written by nothing that records offsets, gives {}.
    """
    dt = open_table(settings, name)
    if dt is None:
        return {}
    for commit in recent_commits(dt):
        meta = parse_metadata(commit.get("userMetadata"))
        if meta is not None:
            return {t: TopicProgress.from_json(p) for t, p in meta.get("kafka", {}).items()}
    return {}


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
