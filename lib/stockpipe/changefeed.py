"""The lake's side of the warehouse export: Delta's change data feed, read with delta-rs.

New tables get the feed from the Spark session's defaults
(``spark.databricks.delta.properties.defaults.enableChangeDataFeed``); a table made
before that gets it here, once, by a property commit under the table's lease that
carries the table's stockpipe metadata forward (as maintenance commits do).

The feed of a range can be gone: its files vacuumed, its log entries cleaned, or
commits made while the feed was off. Reading it then fails, and the export falls
back to a full reload; :class:`ChangeFeedUnavailable` says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from stockpipe.config import Settings
from stockpipe.errors import ChangeFeedUnavailable
from stockpipe.lake import ZONES
from stockpipe.tables import open_table

log = logging.getLogger(__name__)

CDF_PROPERTY = "delta.enableChangeDataFeed"
#: The Spark session setting that turns the feed on for every table Spark creates.
SPARK_DEFAULT = "spark.databricks.delta.properties.defaults.enableChangeDataFeed"
JOB = "warehouse export (enabling the change data feed)"


def feed_enabled(dt: Any) -> bool:
    return dt.metadata().configuration.get(CDF_PROPERTY, "false").lower() == "true"


def ensure_change_feed(settings: Settings, name: str, *, wait_s: float | None = None) -> bool:
    """Turn the change data feed on for table ``name`` if it is off. True if turned on.

    Under the table's lease (one writer per table), waiting up to ``wait_s``.
    """
    from deltalake import CommitProperties

    from stockpipe.lease import hold
    from stockpipe.maintenance import carried_metadata
    from stockpipe.tables import recent_commits

    dt = open_table(settings, name)
    if dt is None or feed_enabled(dt):
        return False
    wait = settings.lease_wait_s if wait_s is None else wait_s
    with hold(settings, [ZONES[name]], job=JOB, wait_s=wait, ttl_s=settings.lease_ttl_s):
        dt = open_table(settings, name)
        if feed_enabled(dt):
            return False
        # the batch job finds its Kafka offsets in the latest commit that has them
        text = carried_metadata(recent_commits(dt))
        props = CommitProperties(custom_metadata={"userMetadata": text}) if text else None
        dt.alter.set_table_properties({CDF_PROPERTY: "true"}, commit_properties=props)
    log.info("%s: change data feed turned on at version %d", ZONES[name], dt.version())
    return True


def read_changes(dt: Any, name: str, start: int, end: int, columns: Sequence[str]) -> pa.Table:
    """Every row change of versions ``start``..``end`` (inclusive) of a table, with the
    feed's ``_change_type`` and ``_commit_version``; ChangeFeedUnavailable if gone.

    Read whole before anything is loaded: a vacuumed file fails the read midway.
    """
    from deltalake.exceptions import DeltaError

    wanted = [*columns, "_change_type", "_commit_version"]
    try:
        # every column, then a projection: delta-rs puts a projection's names into SQL
        # unquoted, and processed/bars has a column named "return"
        reader = dt.load_cdf(starting_version=start, ending_version=end)
        return pa.RecordBatchReader.from_stream(reader).read_all().select(wanted)
    except (DeltaError, pa.ArrowException, OSError) as exc:
        raise ChangeFeedUnavailable(ZONES[name], start, end, _short(exc)) from exc


def read_snapshot(dt: Any, columns: Sequence[str]) -> pa.Table:
    """The table's rows at its loaded version (``columns`` only)."""
    return dt.to_pyarrow_table(columns=list(columns))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
