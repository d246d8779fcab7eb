"""Lake maintenance's pure parts: table names, the retention rule, the metadata a
maintenance commit carries, which partitions Z-ordering rewrites, history lines.
No services; delta-rs on a local table where a real commit is needed."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from stockpipe.errors import LakeError, RetentionTooShortError, UnknownNameError
from stockpipe.lake import TABLES
from stockpipe.maintenance import (
    carried_metadata,
    check_retention,
    describe_progress,
    key_metrics,
    resolve_tables,
    zorder_filters,
)
from stockpipe.tables import TopicProgress, commit_metadata, parse_metadata


def test_tables_by_zone_name_or_path_and_all_by_default():
    assert resolve_tables(None) == list(TABLES)
    assert resolve_tables([]) == list(TABLES)
    assert resolve_tables(["processed/bars", "raw_ticks", "processed_bars"]) == [
        "processed_bars",
        "raw_ticks",
    ]
    with pytest.raises(UnknownNameError, match="unknown Delta table 'checkpoints'"):
        resolve_tables(["checkpoints"])  # a zone, but not a Delta table


def test_retention_under_seven_days_needs_force():
    check_retention(168)
    check_retention(24 * 30)
    with pytest.raises(RetentionTooShortError, match="under 168 h") as exc:
        check_retention(167)
    assert isinstance(exc.value, LakeError)  # the CLI reports it as an error, no traceback
    check_retention(0, force=True)
    with pytest.raises(LakeError, match="negative"):
        check_retention(-1, force=True)


def test_the_latest_stockpipe_metadata_is_carried_as_is():
    progress = {"stock.bars": TopicProgress({0: 12, 1: 7}, "abc")}
    text = commit_metadata(progress)
    commits = [  # newest first, as DeltaTable.history gives them
        {"operation": "VACUUM END"},
        {"operation": "OPTIMIZE", "userMetadata": "not json"},
        {"operation": "MERGE", "userMetadata": text},
        {"operation": "WRITE", "userMetadata": commit_metadata({})},
    ]
    carried = carried_metadata(commits)
    assert parse_metadata(carried) == parse_metadata(text)
    assert json.loads(carried) == json.loads(text)
    assert carried_metadata([{"operation": "STREAMING UPDATE"}]) is None
    assert carried_metadata([]) is None


def test_zorder_rewrites_only_partitions_with_more_than_one_file():
    files = [("1d", 2020), ("1d", 2021), ("1d", 2021), ("1h", 2021), ("1h", 2021), ("1h", 2022)]
    files += [("1d", 2022), ("1d", 2022), ("5m", 2024)]
    assert zorder_filters(["interval", "year"], files) == [
        [("interval", "=", "1d"), ("year", "in", [2021, 2022])],
        [("interval", "=", "1h"), ("year", "in", [2021])],
    ]
    assert zorder_filters(["interval", "year"], [("1d", 2020), ("1h", 2020)]) == []
    assert zorder_filters(["day"], [("a",), ("a",), ("b",)]) == [[("day", "in", ["a"])]]
    assert zorder_filters([], [(), ()]) == [None]
    assert zorder_filters([], [()]) == []


def test_zorder_filters_select_those_partitions_in_delta_rs(tmp_path):
    from deltalake import DeltaTable, write_deltalake

    path = str(tmp_path / "t")
    for i, (interval, year) in enumerate([("1d", 2020), ("1d", 2020), ("1h", 2020), ("1d", 2021)]):
        data = {"symbol": ["B", "A"], "interval": [interval] * 2, "year": [year] * 2, "v": [i, i]}
        write_deltalake(path, pa.table(data), mode="append", partition_by=["interval", "year"])
    dt = DeltaTable(path)
    files = [
        (r["partition.interval"], r["partition.year"])
        for r in pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    ]
    [only] = zorder_filters(["interval", "year"], files)
    metrics = dt.optimize.z_order(["symbol"], partition_filters=only)
    assert (metrics["numFilesRemoved"], metrics["numFilesAdded"]) == (2, 1)


def test_history_lines_name_what_a_commit_did_and_where_kafka_was():
    assert key_metrics({"numOutputRows": "120", "numFiles": "3", "numOutputBytes": "9"}) == (
        "rows written 120, files added 3"
    )
    merge = {"numTargetRowsInserted": 5, "numTargetRowsUpdated": 2, "numTargetFilesAdded": 1}
    assert key_metrics(merge) == "rows inserted 5, rows updated 2, files added 1"
    assert key_metrics({"numFilesAdded": 2, "numFilesRemoved": 9}) == (
        "files added 2, files removed 9"
    )
    assert key_metrics({"numDeletedFiles": 4}) == "files deleted 4"
    assert key_metrics(None) == ""
    kafka = json.loads(commit_metadata({"stock.bars": TopicProgress({10: 1, 2: 5, 0: 3}, "x")}))
    assert describe_progress(kafka["stockpipe"]["kafka"]) == "stock.bars: p0=3 p2=5 p10=1"
    assert describe_progress(None) == ""
