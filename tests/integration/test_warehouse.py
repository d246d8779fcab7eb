"""The warehouse export on the real stack: Kafka -> Spark -> Delta -> PostgreSQL.

Every comparison reads the Delta tables independently (delta-rs, no stockpipe code)
and the warehouse with plain SQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pandas as pd
import pytest
from deltalake import DeltaTable
from oracles.tick_windows import WINDOW_COLUMNS

from stockpipe.ingest import ingest, produce_bars
from stockpipe.kafka import ConfirmedProducer, ensure_topics
from stockpipe.lake import storage_options, table_uri
from stockpipe.sources import fetch_many, get_source
from stockpipe.spark.batch import BarsBatchJob, run_batch_job
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.warehouse.connection import read_sql
from stockpipe.warehouse.export import export
from stockpipe.warehouse.tables import WAREHOUSE_TABLES

pytestmark = pytest.mark.integration

BARS = WAREHOUSE_TABLES["bars"]


@pytest.fixture
def lake(settings):
    """A bucket, a topic and a warehouse schema of the test's own."""
    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "bucket": f"wh-{run}",
            "topic_bars": f"bars.{run}",
            "topic_ticks": f"ticks.{run}",
            "warehouse_schema": f"wh_{run}",
        }
    )
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars, s.topic_ticks], partitions=3)
    return s


def delta_frame(s, zone_name: str, columns, key) -> pd.DataFrame:
    dt = DeltaTable(table_uri(s, zone_name), storage_options=storage_options(s))
    df = dt.to_pyarrow_table(columns=list(columns)).to_pandas()
    return df.sort_values(list(key)).reset_index(drop=True)


def warehouse_frame(s, table: str, columns, key) -> pd.DataFrame:
    cols = ", ".join(f'"{c}"' for c in columns)
    order = ", ".join(f'"{c}"' for c in key)
    df = read_sql(s, f'SELECT {cols} FROM "{s.warehouse_schema}"."{table}" ORDER BY {order}')
    return df.reset_index(drop=True)


def assert_bars_equal(s) -> pd.DataFrame:
    expected = delta_frame(s, "processed_bars", BARS.columns, BARS.key)
    got = warehouse_frame(s, "bars", BARS.columns, BARS.key)
    assert len(got) == len(expected) > 0
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    return got


def quarantine_counts_from_delta(s) -> Counter:
    counts: Counter = Counter()
    for zone_name, date in (
        ("quarantine_bars", "quarantine_date"),
        ("quarantine_ticks", "ingest_date"),
    ):
        try:
            dt = DeltaTable(table_uri(s, zone_name), storage_options=storage_options(s))
        except Exception:
            continue
        df = dt.to_pandas(columns=[date, "reason"])
        for day, reason in zip(df[date], df["reason"], strict=True):
            for r in str(reason).split("; "):
                counts[(zone_name.replace("_", "/"), pd.Timestamp(day).date(), r)] += 1
    return counts


def quarantine_counts_in_warehouse(s) -> Counter:
    df = read_sql(
        s, f'SELECT zone, date, reason, "rows" FROM "{s.warehouse_schema}".quarantine_counts'
    )
    return Counter({(z, d, r): n for z, d, r, n in df.itertuples(index=False) if n})


def exported_version(s, source: str) -> tuple[int, str]:
    df = read_sql(
        s,
        f'SELECT version, exported_at FROM "{s.warehouse_schema}"._stockpipe_exports '
        f"WHERE target = 'bars' AND source = '{source}'",
    )
    return int(df["version"].iloc[0]), str(df["exported_at"].iloc[0])


def test_export_equals_delta_a_correction_updates_one_row_and_nothing_new_is_quick(lake, spark):
    r = ingest(lake, "samples", "MSFT,GOOG", start="2015-01-01", end="2015-12-31", progress=False)
    sent = fetch_many(
        get_source("samples"),
        "MSFT,GOOG",
        batch_id="x",
        progress=False,
        start="2015-01-01",
        end="2015-12-31",
    ).bars
    with ConfirmedProducer(lake, lake.topic_bars) as p:
        p.send(b"MSFT", b"{not json")
        p.send(b"MSFT", b"\xff\xfe garbage")
    run_batch_job(lake, spark=spark)

    first = export(lake)
    bars = next(x for x in first.sources if x.table == "bars")
    assert bars.mode == "full" and bars.reason == "nothing was exported before"
    assert first.counts["bars"] == r.sent
    assert_bars_equal(lake)
    assert quarantine_counts_in_warehouse(lake) == quarantine_counts_from_delta(lake)
    # the garbage bytes are both invalid UTF-8 and unparsable: one record, two reasons
    reasons = Counter({r: n for (_, _, r), n in quarantine_counts_in_warehouse(lake).items()})
    assert reasons == {"unparsable_json": 2, "invalid_utf8": 1}

    # A correction re-sent through Kafka: exactly one warehouse row changes.
    before = warehouse_frame(lake, "bars", BARS.columns, BARS.key)
    fix = sent[sent.symbol == "MSFT"].iloc[[100]].copy()
    fix["volume"] = fix["volume"] + 1234
    fix["ingested_at"] = pd.Timestamp.now(tz="UTC")
    fix["batch_id"] = "correction"
    produce_bars(lake, fix, progress=False)
    run_batch_job(lake, spark=spark)
    second = export(lake, "bars")
    [inc] = second.sources
    assert inc.mode == "incremental", inc.reason
    assert inc.rows_written == 1 and inc.rows_deleted == 0
    after = assert_bars_equal(lake)
    changed = (before != after) & ~(before.isna() & after.isna())
    assert changed.any(axis=1).sum() == 1
    row = after[changed.any(axis=1)].iloc[0]
    assert (row["symbol"], row["volume"]) == ("MSFT", fix["volume"].iloc[0])

    # Nothing new: nothing changes, quickly.
    version, at = exported_version(lake, "processed/bars")
    t0 = time.perf_counter()
    third = export(lake)
    took = time.perf_counter() - t0
    assert all(x.mode == "unchanged" for x in third.sources if x.mode != "skipped")
    assert took < 5, f"a no-op export took {took:.1f} s"
    assert exported_version(lake, "processed/bars") == (version, at)
    assert_bars_equal(lake)


KILL_SCRIPT = """
import os, signal, sys
from stockpipe.config import get_settings
from stockpipe.warehouse import export as E

def commit(self):
    open(sys.argv[1], "w").write("loaded")  # the rows are staged and applied, uncommitted
    os.kill(os.getpid(), signal.SIGKILL)

E.Loader.commit = commit
E.export(get_settings(), "bars")
"""


def test_sigkill_between_bulk_load_and_commit_then_rerun_exports_exactly_once(
    lake, spark, tmp_path
):
    ingest(lake, "samples", "MSFT,GOOG", start="2016-01-01", end="2016-06-30", progress=False)
    run_batch_job(lake, spark=spark)
    export(lake, "bars")
    exported = assert_bars_equal(lake)
    version, _ = exported_version(lake, "processed/bars")

    ingest(lake, "samples", "MSFT,GOOG", start="2016-07-01", end="2016-12-31", progress=False)
    run_batch_job(lake, spark=spark)
    marker = tmp_path / "loaded"
    env = {**os.environ, **lake.to_env()}
    child = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(marker)], env=env, capture_output=True, text=True
    )
    assert child.returncode == -9, child.stderr
    assert marker.read_text() == "loaded"
    # Killed before its commit: the warehouse is as the last export left it.
    still = warehouse_frame(lake, "bars", BARS.columns, BARS.key)
    pd.testing.assert_frame_equal(still, exported)
    assert exported_version(lake, "processed/bars")[0] == version

    rerun = export(lake, "bars")
    assert [x.mode for x in rerun.sources] == ["incremental"]
    got = assert_bars_equal(lake)
    assert len(got) > len(exported)
    assert not got.duplicated(list(BARS.key)).any()


def test_optimize_moves_the_version_and_a_vacuumed_or_rebuilt_source_reloads_in_full(lake, spark):
    from stockpipe.maintenance import optimize, vacuum

    ingest(lake, "samples", "MSFT", start="2017-01-01", end="2017-03-31", progress=False)
    run_batch_job(lake, spark=spark)
    ingest(lake, "samples", "MSFT", start="2017-04-01", end="2017-06-30", progress=False)
    run_batch_job(lake, spark=spark)
    export(lake, "bars")

    # OPTIMIZE: a commit without row changes; the export reads no row, moves on.
    assert optimize(lake, "processed_bars").commits >= 1
    [opt] = export(lake, "bars").sources
    assert opt.mode == "incremental" and opt.rows_read == 0 and opt.rows_written == 0
    assert exported_version(lake, "processed/bars")[0] == opt.to_version
    assert_bars_equal(lake)

    # New bars, then VACUUM deletes the files their change feed was in: a full reload.
    ingest(lake, "samples", "MSFT", start="2017-07-01", end="2017-09-30", progress=False)
    run_batch_job(lake, spark=spark)
    optimize(lake, "processed_bars")
    vacuum(lake, "processed_bars", retention_hours=0, force=True)
    [full] = export(lake, "bars").sources
    assert full.mode == "full" and "change data feed is gone" in full.reason
    assert_bars_equal(lake)

    # A rebuild from raw/ overwrites the table: its feed deletes and re-inserts
    # every row in one commit, which the export applies as the same rows.
    BarsBatchJob(lake, spark).rebuild()
    [rebuilt] = export(lake, "bars").sources
    assert rebuilt.mode == "incremental" and rebuilt.rows_deleted == 0
    assert_bars_equal(lake)


def test_tick_windows_and_quarantined_ticks_after_the_streaming_job(lake, spark, stream_spark):
    from stockpipe.spark.streaming import StreamOptions, run_stream
    from stockpipe.ticks import TickSpec, run_producer

    base = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)
    spec = TickSpec(
        symbols=("AAPL", "MSFT"), seed=3, rate=100, start_ms=base, step_ms=20, producer_id="wh"
    )
    run_producer(lake, spec, rate=5000, max_ticks=4000)
    with ConfirmedProducer(lake, lake.topic_ticks) as p:
        p.send(b"AAPL", b"not json")
    opts = StreamOptions(
        window="10 seconds",
        slide="5 seconds",
        watermark="5 seconds",
        mode="available-now",
        name="wh_windows",
        duration_s=300,
        state_partitions=2,
    )
    run_stream(lake, opts, spark=stream_spark)
    report = export(lake, "tick_windows,quarantine_counts")
    key = WAREHOUSE_TABLES["tick_windows"].key
    columns = [*WINDOW_COLUMNS, "date"]
    expected = delta_frame(lake, "tick_windows", columns, key)
    got = warehouse_frame(lake, "tick_windows", columns, key)
    assert len(got) == len(expected) == report.counts["tick_windows"] > 10
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert quarantine_counts_in_warehouse(lake) == quarantine_counts_from_delta(lake)
    assert (
        sum(
            v
            for (z, *_), v in quarantine_counts_in_warehouse(lake).items()
            if z == "quarantine/ticks"
        )
        == 1
    )


def test_a_table_made_before_the_feed_gets_it_and_keeps_its_kafka_progress(
    lake, spark, monkeypatch
):
    import stockpipe.spark.batch
    from stockpipe.changefeed import CDF_PROPERTY, SPARK_DEFAULT
    from stockpipe.tables import kafka_progress

    # as a lake made before every zone was created up front: the job makes the table
    monkeypatch.setattr(stockpipe.spark.batch, "ensure_tables", lambda *_a, **_k: [])
    spark.conf.set(SPARK_DEFAULT, "false")  # as tables made before this setting
    try:
        r = ingest(lake, "samples", "GOOG", start="2012-01-01", end="2012-06-30", progress=False)
        assert r.sent > 100
        run_batch_job(lake, spark=spark)
    finally:
        spark.conf.set(SPARK_DEFAULT, "true")
    uri, options = table_uri(lake, "processed_bars"), storage_options(lake)
    before = DeltaTable(uri, storage_options=options).metadata().configuration
    assert before.get(CDF_PROPERTY, "false") == "false"
    progress = kafka_progress(lake, "processed_bars")

    [first] = export(lake, "bars").sources
    dt = DeltaTable(uri, storage_options=options)
    assert dt.metadata().configuration[CDF_PROPERTY] == "true"
    assert dt.history(1)[0]["operation"] == "SET TBLPROPERTIES"
    assert kafka_progress(lake, "processed_bars") == progress  # carried forward
    assert first.mode == "full"
    assert_bars_equal(lake)

    ingest(lake, "samples", "GOOG", start="2012-07-01", end="2012-07-31", progress=False)
    run_batch_job(lake, spark=spark)
    [second] = export(lake, "bars").sources
    assert second.mode == "incremental" and second.rows_written > 10
    assert_bars_equal(lake)
