"""Lake maintenance on the real stack: OPTIMIZE and VACUUM of Delta tables in MinIO.

Compaction keeps the rows and the batch job's Kafka progress; VACUUM with the
default retention keeps every file a reader of a recent version needs; a shorter
retention is refused unless forced; maintenance waits for, or reports, a table
another job is writing. Every test gets its own bucket.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stockpipe import tables
from stockpipe.errors import LeaseHeldError, RetentionTooShortError
from stockpipe.lake import filesystem as lake_fs
from stockpipe.lake import storage_options, table_uri, zone
from stockpipe.lease import hold
from stockpipe.maintenance import maintain, optimize, vacuum
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.tables import (
    TopicProgress,
    commit_metadata,
    history,
    kafka_progress,
    open_table,
    parse_metadata,
)

pytestmark = pytest.mark.integration

TOPIC = "stock.bars.test"
SYMBOLS = ("AAA", "BBB", "CCC")
START = datetime(2023, 12, 26, tzinfo=UTC)  # the appends span two year partitions


@pytest.fixture
def lake(settings):
    """A fresh bucket for one test: runs never see each other's tables."""
    s = settings.model_copy(update={"bucket": f"maint-{uuid.uuid4().hex[:8]}"})
    provision_bucket(s)
    return s


def bars(day: int, days: int = 2) -> pa.Table:
    """``days`` daily bars of every symbol from START + ``day``, as processed/bars holds them."""
    rows = [
        (sym, START + timedelta(days=d), 100.0 + d + i)
        for d in range(day, day + days)
        for i, sym in enumerate(SYMBOLS)
    ]
    ts = [r[1] for r in rows]
    return pa.table(
        {
            "symbol": [r[0] for r in rows],
            "interval": ["1d"] * len(rows),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "close": [r[2] for r in rows],
            "year": pa.array([t.year for t in ts], pa.int32()),
        }
    )


def progress_after(commit: int) -> dict[str, TopicProgress]:
    return {TOPIC: TopicProgress({0: 10 * commit, 1: 7 * commit}, "topic-id-1")}


def append_bars(s, commits: int, *, first: int = 0) -> None:
    """``commits`` small appends to processed/bars, each with its Kafka progress, as the
    batch job commits them."""
    from deltalake import CommitProperties, write_deltalake

    for k in range(first, first + commits):
        meta = commit_metadata(progress_after(k + 1))
        write_deltalake(
            table_uri(s, "processed_bars"),
            bars(2 * k),
            mode="append",
            partition_by=["interval", "year"],
            storage_options=storage_options(s),
            commit_properties=CommitProperties(custom_metadata={"userMetadata": meta}),
        )


def frame(dt) -> pd.DataFrame:
    df = dt.to_pyarrow_table().to_pandas()
    df = df[sorted(df.columns)]
    return df.sort_values(["symbol", "interval", "ts"]).reset_index(drop=True)


def files(dt) -> int:
    return len(dt.file_uris())


def test_optimize_compacts_small_files_keeping_rows_and_kafka_progress(lake):
    append_bars(lake, 8)
    dt = open_table(lake, "processed_bars")
    before, progress = frame(dt), kafka_progress(lake, "processed_bars")
    assert progress == progress_after(8)
    n_before = files(dt)
    assert n_before >= 8

    result = optimize(lake, "processed_bars")
    assert result.zorder == ("symbol",)
    assert (result.files_before, result.files_after) == (n_before, 2)  # one per partition
    assert result.commits >= 1
    dt = open_table(lake, "processed_bars")
    assert files(dt) == 2
    pd.testing.assert_frame_equal(frame(dt), before)
    assert kafka_progress(lake, "processed_bars") == progress
    [latest] = history(lake, "processed_bars", 1)
    assert latest["operation"] == "OPTIMIZE"
    assert latest["kafka"] == {TOPIC: progress[TOPIC].to_json()}  # carried into the commit
    # Z-ordered by symbol: within each file the symbols come in runs, not day by day
    for uri in dt.file_uris():
        with lake_fs(lake).open(uri.removeprefix("s3://")) as f:
            symbols = pq.read_table(f)["symbol"].to_pylist()
        runs = sum(1 for a, b in itertools.pairwise(symbols) if a != b) + 1
        assert runs == len(set(symbols)), symbols

    # compacted partitions are not rewritten again: no commit, nothing to do
    version = dt.version()
    again = optimize(lake, "processed_bars")
    assert (again.commits, again.files_after) == (0, 2)
    assert open_table(lake, "processed_bars").version() == version

    # a new day makes one partition hold two files: only that one is rewritten
    append_bars(lake, 1, first=8)
    third = optimize(lake, "processed_bars")
    assert (third.files_before, third.files_removed, third.files_after) == (3, 2, 2)
    assert kafka_progress(lake, "processed_bars") == progress_after(9)


def test_every_maintenance_commit_carries_the_kafka_progress(lake, monkeypatch):
    append_bars(lake, 6)
    meta = parse_metadata(commit_metadata(progress_after(6)))
    optimize(lake, "processed_bars")
    # nothing is old enough for the default retention: VACUUM deletes nothing, commits nothing
    version = open_table(lake, "processed_bars").version()
    kept = vacuum(lake, "processed_bars")
    assert kept.files == [] and kept.files_removed == 0
    assert open_table(lake, "processed_bars").version() == version
    # forced to a zero retention, VACUUM deletes the compacted files in two commits
    gone = vacuum(lake, "processed_bars", 0, force=True)
    assert gone.files_removed >= 6
    commits = history(lake, "processed_bars", 20)
    ops = [c["operation"] for c in commits[:3]]
    assert ops == ["VACUUM END", "VACUUM START", "OPTIMIZE"]
    for c in commits[:3]:
        assert c["kafka"] == meta["kafka"], c  # read back from the commit itself
    assert kafka_progress(lake, "processed_bars") == progress_after(6)
    # however many maintenance commits follow, the latest one alone has the progress
    monkeypatch.setattr(tables, "HISTORY_DEPTH", 1)
    assert kafka_progress(lake, "processed_bars") == progress_after(6)
    monkeypatch.undo()
    # a second forced run finds only files already gone: nothing to delete, no commit
    again = vacuum(lake, "processed_bars", 0, force=True)
    assert again.files == []
    assert open_table(lake, "processed_bars").version() == commits[0]["version"]


def test_vacuum_keeps_the_files_a_reader_of_version_n_needs(lake):
    append_bars(lake, 4)
    reader = open_table(lake, "processed_bars")
    n = reader.version()
    at_n = frame(reader)
    assert len(at_n) == 4 * 2 * len(SYMBOLS)
    append_bars(lake, 3, first=4)

    report = maintain(lake, ["processed_bars"])
    assert report.ok, report.lines()
    [entry] = report.tables
    assert entry.optimize.files_after < entry.optimize.files_before
    assert entry.vacuum.retention_hours == 168 and entry.vacuum.files_removed == 0

    pd.testing.assert_frame_equal(frame(reader), at_n)  # the reader that held version N
    pd.testing.assert_frame_equal(frame(open_table(lake, "processed_bars", version=n)), at_n)
    assert len(frame(open_table(lake, "processed_bars"))) == 7 * 2 * len(SYMBOLS)

    # the contrast: a forced zero retention does delete what version N needs
    vacuum(lake, "processed_bars", 0, force=True)
    with pytest.raises(Exception, match=r"(?i)not found|no such|404"):
        frame(open_table(lake, "processed_bars", version=n))


def test_time_travel_returns_version_n(lake):
    append_bars(lake, 2)
    n = open_table(lake, "processed_bars").version()
    append_bars(lake, 2, first=2)
    optimize(lake, "processed_bars")
    expected = pa.concat_tables([bars(0), bars(2)]).to_pandas()
    expected = expected[sorted(expected.columns)].sort_values(["symbol", "interval", "ts"])
    got = frame(open_table(lake, "processed_bars", version=n))
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_dtype=False)
    assert kafka_progress(lake, "processed_bars") == progress_after(4)


def test_retention_under_seven_days_is_refused_without_force(lake, monkeypatch):
    append_bars(lake, 2)
    version = open_table(lake, "processed_bars").version()
    with pytest.raises(RetentionTooShortError, match=r"under 168 h \(7 days\)"):
        vacuum(lake, "processed_bars", 24)
    with pytest.raises(RetentionTooShortError):
        maintain(lake, retention_hours=1)
    assert open_table(lake, "processed_bars").version() == version

    from stockpipe.cli import app

    monkeypatch.setenv("STOCKPIPE_BUCKET", lake.bucket)
    out = CliRunner().invoke(app, ["lake", "vacuum", "processed_bars", "--retention-hours", "24"])
    assert out.exit_code == 1
    assert "error: a VACUUM retention of 24 h is under 168 h" in out.output
    assert "Traceback" not in out.output
    out = CliRunner().invoke(app, ["lake", "history", "processed/bars", "--limit", "1"])
    assert out.exit_code == 0, out.output
    assert "WRITE" in out.output and f"kafka {TOPIC}: p0=20 p1=14" in out.output
    out = CliRunner().invoke(app, ["lake", "maintain"])
    assert out.exit_code == 0, out.output
    assert "processed_bars: files 2 -> 1 (Z-order by symbol" in out.output
    assert "raw_ticks: skipped: no table yet" in out.output


def test_streaming_tables_small_files_are_compacted_too(lake):
    from deltalake import write_deltalake

    uri = table_uri(lake, "tick_windows")
    for k in range(10):  # one small file per micro-batch
        t0 = START + timedelta(minutes=k)
        batch = pa.table(
            {
                "symbol": ["AAA", "BBB"],
                "window_start": pa.array([t0, t0], pa.timestamp("us", tz="UTC")),
                "vwap": [1.0 + k, 2.0 + k],
                "window_date": pa.array([t0.date()] * 2, pa.date32()),
            }
        )
        write_deltalake(
            uri,
            batch,
            mode="append",
            partition_by=["window_date"],
            storage_options=storage_options(lake),
        )
    before = frame_by(open_table(lake, "tick_windows"), ["symbol", "window_start"])

    report = maintain(lake)
    assert report.ok, report.lines()
    by_table = {t.table: t for t in report.tables}
    assert by_table["tick_windows"].optimize.files_before == 10
    assert by_table["tick_windows"].optimize.files_after == 1
    assert by_table["raw_bars"].skipped == "no table yet"
    dt = open_table(lake, "tick_windows")
    pd.testing.assert_frame_equal(frame_by(dt, ["symbol", "window_start"]), before)
    assert dt.history(1)[0]["operation"] == "OPTIMIZE"
    assert "userMetadata" not in dt.history(1)[0]  # nothing to carry: none invented


def frame_by(dt, keys: list[str]) -> pd.DataFrame:
    df = dt.to_pyarrow_table().to_pandas()
    return df[sorted(df.columns)].sort_values(keys).reset_index(drop=True)


def test_maintenance_waits_for_a_lease_or_reports_its_holder(lake):
    append_bars(lake, 3)
    version = open_table(lake, "processed_bars").version()
    with hold(lake, ["processed/bars"], job="spark batch job on stock.bars"):
        with pytest.raises(LeaseHeldError, match=r"spark batch job on stock\.bars"):
            optimize(lake, "processed_bars", wait_s=0)
        with pytest.raises(LeaseHeldError, match="one writer per table"):
            vacuum(lake, "processed_bars", wait_s=0)
        report = maintain(lake, ["processed_bars"], wait_s=1)
        assert not report.ok
        assert "spark batch job on stock.bars" in report.held[0].held
        assert open_table(lake, "processed_bars").version() == version  # untouched

    released = threading.Event()

    def holder() -> None:
        with hold(lake, ["processed/bars"], job="a short writer"):
            released.wait(3)

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.5)  # the holder has the lease
    threading.Timer(2.0, released.set).start()
    t0 = time.monotonic()
    report = maintain(lake, ["processed_bars"], wait_s=60)
    waited = time.monotonic() - t0
    t.join()
    assert report.ok, report.lines()
    assert waited >= 1.0  # it waited for the holder instead of failing
    assert report.tables[0].optimize.commits >= 1
    assert kafka_progress(lake, "processed_bars") == progress_after(3)


def test_a_table_spark_writes_and_merges_stays_readable_and_writable_by_spark(lake, spark):
    """delta-rs maintenance commits on a table of delta-spark's making: Spark reads the
    same rows after OPTIMIZE + VACUUM, and appends and merges to it as before."""
    path = zone(lake, "processed_bars", spark=True)
    for k, (day, days) in enumerate([(0, 3), (3, 4)]):  # the second one spans 2023 and 2024
        df = spark.createDataFrame(bars(day, days).to_pandas())
        meta = commit_metadata(progress_after(k + 1))
        df.write.format("delta").mode("append").option("userMetadata", meta).partitionBy(
            "interval", "year"
        ).save(path)
    fix = bars(0, 1).to_pandas().assign(close=1.5)
    spark.createDataFrame(fix).createOrReplaceTempView("fix")
    spark.sql(  # as the batch job merges: SQL (a Connect session has no DeltaTable API)
        f"MERGE INTO delta.`{path}` AS t USING fix AS s "
        "ON t.symbol = s.symbol AND t.ts = s.ts WHEN MATCHED THEN UPDATE SET *"
    ).collect()

    def spark_rows():
        return sorted(
            tuple(r)
            for r in spark.read.format("delta")
            .load(path)
            .select("symbol", "interval", "ts", "close", "year")
            .collect()
        )

    before = spark_rows()
    report = maintain(lake, ["processed_bars"])
    assert report.ok, report.lines()
    assert report.tables[0].optimize.files_after == 2
    assert spark_rows() == before
    assert kafka_progress(lake, "processed_bars") == progress_after(2)

    df = spark.createDataFrame(bars(8).to_pandas())
    meta = commit_metadata(progress_after(3))
    df.write.format("delta").mode("append").option("userMetadata", meta).partitionBy(
        "interval", "year"
    ).save(path)
    assert len(spark_rows()) == len(before) + 2 * len(SYMBOLS)
    assert kafka_progress(lake, "processed_bars") == progress_after(3)


def test_readers_filter_by_symbol_files_other_writers_store_as_string_view(lake):
    """deltalake's MERGE writes strings as string_view, whose statistics pyarrow cannot
    compare with a string: the readers still select by symbol."""
    from stockpipe.reader import read_bars

    append_bars(lake, 2)
    dt = open_table(lake, "processed_bars")
    fix = bars(0, days=1).filter(pa.compute.equal(pa.compute.field("symbol"), "BBB"))
    fix = fix.set_column(3, "close", pa.array([42.0]))
    (
        dt.merge(fix, "t.symbol = s.symbol AND t.ts = s.ts", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .execute()
    )
    dt = open_table(lake, "processed_bars")
    kinds = {
        pq.read_schema(pa.BufferReader(lake_fs(lake).cat(u.replace("s3://", ""))))
        .field("symbol")
        .type
        for u in dt.file_uris()
    }
    assert pa.string_view() in kinds  # the case this test is about
    got = read_bars(lake, ["BBB"], interval="1d")
    everything = frame(dt)
    expected = everything[everything.symbol == "BBB"]
    assert got["close"].tolist() == expected.sort_values("ts")["close"].tolist()
    assert got["close"].iloc[0] == 42.0 and set(got["symbol"]) == {"BBB"}
