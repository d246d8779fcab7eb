"""Pure transforms from a Delta table's change data feed (or snapshot) to the rows a
warehouse table is upserted with. Arrow in, Arrow out; no I/O.

A change feed has every row version of the range, with ``_change_type`` (insert,
update_preimage, update_postimage, delete) and ``_commit_version``. Only the last
state of each key matters to an upsert: the newest commit's row, or a deletion.
Within one commit, a row written (insert, postimage) wins over a delete: an
overwrite (``stockpipe batch --rebuild``) deletes every old row and inserts the new
ones in the same commit.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pyarrow as pa

from stockpipe.warehouse.dialects import DELETED
from stockpipe.warehouse.tables import COUNT_SCHEMA

CHANGE_TYPE = "_change_type"
COMMIT_VERSION = "_commit_version"
#: The feed's own columns (dropped before loading).
CDF_COLUMNS = (CHANGE_TYPE, COMMIT_VERSION, "_commit_timestamp")
WRITTEN = ("insert", "update_postimage")
#: Sign of a row version in a count: +1 present after the change, -1 gone.
SIGN = {"insert": 1, "update_postimage": 1, "delete": -1, "update_preimage": -1}


def plain_types(table: pa.Table) -> pa.Table:
    """String and binary views as plain arrays: what every ADBC driver ingests."""
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_string_view(t) or pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
            t = pa.binary()
        fields.append(pa.field(f.name, t, f.nullable))
    schema = pa.schema(fields)
    return table if schema == table.schema else table.cast(schema)


def snapshot_rows(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """A full reload's rows: the snapshot's ``columns``, none flagged deleted."""
    out = plain_types(table.select(list(columns)))
    return out.append_column(DELETED, pa.array([False] * out.num_rows, pa.bool_()))


def latest_changes(changes: pa.Table, key: Sequence[str], columns: Sequence[str]) -> pa.Table:
    """One row per changed key: its last written values, or ``_deleted`` true."""
    df = pl.from_arrow(plain_types(changes))
    assert isinstance(df, pl.DataFrame)
    df = df.filter(pl.col(CHANGE_TYPE) != "update_preimage")
    if df.is_empty():
        empty = changes.schema.empty_table().select(list(columns))
        return snapshot_rows(empty, columns)
    written = pl.col(CHANGE_TYPE).is_in(list(WRITTEN))
    rank = pl.col(COMMIT_VERSION).cast(pl.Int64) * 2 + written.cast(pl.Int64)
    last = (
        df.with_columns(rank.alias("_rank"), (~written).alias(DELETED))
        .sort("_rank", maintain_order=True)
        .unique(subset=list(key), keep="last", maintain_order=True)
        .select([*columns, DELETED])
    )
    return plain_types(last.to_arrow())


def count_changes(
    changes: pa.Table, zone: str, date_column: str, *, snapshot: bool = False
) -> pa.Table:
    """Quarantined records counted by (zone, date, reason), as differences.

    ``changes``: a change feed (rows counted +1 or -1 by their change type), or with
    ``snapshot`` a table's rows (each +1). A record with several reasons (``a; b``)
    counts once under each, as the batch job's report counts them. Groups whose
    difference is zero are left out.
    """
    df = pl.from_arrow(
        plain_types(changes.select([date_column, "reason", *([] if snapshot else [CHANGE_TYPE])]))
    )
    assert isinstance(df, pl.DataFrame)
    sign = pl.lit(1) if snapshot else pl.col(CHANGE_TYPE).replace_strict(SIGN, default=0)
    counted = (
        df.with_columns(
            sign.cast(pl.Int64).alias("rows"),
            pl.col("reason").fill_null("(none)").str.split("; ").alias("reason"),
        )
        .explode("reason")
        .group_by(pl.col(date_column).cast(pl.Date).alias("date"), "reason")
        .agg(pl.col("rows").sum())
        .filter(pl.col("rows") != 0)
        .with_columns(pl.lit(zone).alias("zone"))
        .select(COUNT_SCHEMA.names)
        .sort(["date", "reason"])
    )
    out = counted.to_arrow().cast(COUNT_SCHEMA)
    return out.append_column(DELETED, pa.array([False] * out.num_rows, pa.bool_()))
