"""Samples -> producer -> Kafka -> Spark batch job -> raw/processed/quarantine, for real."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from oracles.bars import assert_same_bars, expected_processed

from stockpipe.ingest import ingest, produce_bars
from stockpipe.kafka import ConfirmedProducer, ensure_topics, read_all
from stockpipe.lake import zone
from stockpipe.reader import LastRead, read_bars, read_quarantine, read_raw_bars
from stockpipe.schemas import BAR_KEY, conform_bars
from stockpipe.sources import fetch_many, get_source
from stockpipe.spark import transforms as T
from stockpipe.spark.batch import PARTITIONS, BarsBatchJob, pending_records, run_batch_job
from stockpipe.spark.session import session_conf
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.tables import history, row_count

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(settings):
    """A fresh bucket and topic for one test: runs never see each other's data."""
    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"bucket": f"lake-{run}", "topic_bars": f"bars.{run}"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars], partitions=3)
    return s


def test_producer_delivers_every_bar_keyed_and_ordered_per_symbol(lake):
    src = get_source("synthetic", lake, n_symbols=5, seed=7)
    bars = fetch_many(
        src, None, start="2020-01-01", end="2020-12-31", batch_id="b1", progress=False
    ).bars
    for backend in ("confluent", "kafka-python"):
        topic = f"{lake.topic_bars}.{backend}"
        ensure_topics(lake, [topic], partitions=3)
        report = produce_bars(lake, bars, topic, backend=backend, progress=False)
        assert report.sent == len(bars) and report.failed == 0
        got = list(read_all(lake, topic))
        assert len(got) == len(bars)  # nothing doubled, nothing lost
        per_symbol: dict[str, list[str]] = {}
        for _, _, key, value in sorted(got, key=lambda r: (r[0], r[1])):
            msg = json.loads(value)
            assert key.decode() == msg["symbol"]
            per_symbol.setdefault(msg["symbol"], []).append(msg["ts"])
        for symbol, ts in per_symbol.items():
            assert ts == sorted(ts), f"{symbol} bars arrived out of order"
        assert dict(report.per_key) == bars["symbol"].value_counts().to_dict()


def test_the_ingest_command_sends_a_window_and_ends_a_bad_run_with_the_reason(lake):
    """`stockpipe ingest`: the sample rows of the window reach the topic, once each; a
    symbol the source lacks and a closed market's window end as the producer says."""
    from typer.testing import CliRunner

    from stockpipe.cli import app
    from stockpipe.config import PROJECT_ROOT

    days = pd.read_csv(PROJECT_ROOT / "data_samples" / "MSFT.csv", usecols=["Date"])["Date"]
    expected = int(days.between("2012-03-01", "2012-05-31", inclusive="left").sum())
    args = ["ingest", "--symbols", "MSFT", "--topic", lake.topic_bars]
    out = CliRunner().invoke(app, [*args, "--start", "2012-03-01", "--end", "2012-05-31"])
    assert out.exit_code == 0, out.output
    values = [json.loads(v) for *_, v in read_all(lake, lake.topic_bars)]
    assert len(values) == expected > 50
    assert len({v["ts"] for v in values}) == expected and {v["symbol"] for v in values} == {"MSFT"}

    out = CliRunner().invoke(app, ["ingest", "--symbols", "NOSUCH", "--topic", lake.topic_bars])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "error: samples: NOSUCH: no bars were fetched (samples: NOSUCH:" in out.output
    weekend = ["--start", "2012-03-03", "--end", "2012-03-05"]  # a Saturday and Sunday
    out = CliRunner().invoke(app, [*args, *weekend])
    assert out.exit_code == 1 and "error: samples: MSFT: no bars were fetched" in out.output
    out = CliRunner().invoke(app, [*args, *weekend, "--allow-empty"])
    assert out.exit_code == 0 and "nothing to do: no 1d bars for MSFT" in out.output
    assert len(list(read_all(lake, lake.topic_bars))) == expected  # nothing more sent


def test_samples_through_the_job_incremental_idempotent_and_quarantined(lake, spark):
    window1 = dict(start="2012-01-01", end="2012-12-31")
    r1 = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window1)
    assert r1.ok and r1.sent == r1.fetched > 400
    sent1 = fetch_many(
        get_source("samples"), "MSFT,GOOG", batch_id="x", progress=False, **window1
    ).bars

    job1 = run_batch_job(lake, spark=spark)
    assert job1.records_read == r1.sent and job1.raw_rows == r1.sent
    assert job1.quarantined_rows == 0
    processed = read_bars(lake, None, interval="1d")
    assert_same_bars(processed, expected_processed(sent1))
    assert len(read_raw_bars(lake)) == r1.sent

    # Nothing new: a quick no-op that changes nothing.
    assert pending_records(lake) == 0
    job2 = run_batch_job(lake, spark=spark)
    assert job2.noop and job2.records_read == 0
    assert len(read_bars(lake, None)) == len(processed)

    # Re-sending the same bars doubles nothing.
    r2 = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window1)
    job3 = run_batch_job(lake, spark=spark)
    assert job3.records_read == r2.sent and job3.duplicates_removed == r2.sent
    assert_same_bars(read_bars(lake, None), expected_processed(sent1))

    # New days, a corrected bar, and bad records written straight to Kafka.
    window2 = dict(start="2013-01-01", end="2013-03-31")
    r3 = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window2)
    sent3 = fetch_many(
        get_source("samples"), "MSFT,GOOG", batch_id="y", progress=False, **window2
    ).bars
    fix = sent1[sent1.symbol == "MSFT"].iloc[[100]].copy()
    fix["close"] = fix["close"] + 0.5
    fix["high"] = np.maximum(fix["high"], fix["close"])
    fix["ingested_at"] = pd.Timestamp.now(tz="UTC")
    fix["batch_id"] = "correction"
    produce_bars(lake, fix, progress=False)
    good = json.loads(
        next(v for _, v in __import__("stockpipe.schemas", fromlist=["x"]).bar_messages(fix))
    )
    bad = {
        b"\xff\xfe garbage": ["invalid_utf8"],
        b"{not json": ["unparsable_json"],
        json.dumps({**good, "open": "abc"}).encode(): ["wrong_type_open"],
        json.dumps({**good, "low": -1.0}).encode(): ["non_positive_price"],
        json.dumps({**good, "high": good["low"] - 1}).encode(): ["high_below_range"],
        json.dumps({**good, "volume": -5}).encode(): ["negative_volume"],
        json.dumps({**good, "interval": "7d"}).encode(): ["unknown_interval"],
        json.dumps({**good, "ts": "2999-01-01T00:00:00.000Z"}).encode(): ["future_ts"],
        json.dumps({k: v for k, v in good.items() if k != "close"}).encode(): ["missing_close"],
    }
    with ConfirmedProducer(lake, lake.topic_bars) as p:
        for value in bad:
            p.send(b"MSFT", value)
    job4 = run_batch_job(lake, spark=spark)
    assert job4.records_read == r3.sent + 1 + len(bad)
    assert job4.quarantined_rows == len(bad)

    everything = pd.concat([sent1, sent1, sent3, fix], ignore_index=True)  # r2 re-sent sent1
    assert_same_bars(read_bars(lake, None), expected_processed(everything))
    corrected = read_bars(lake, "MSFT", fix["ts"].iloc[0], fix["ts"].iloc[0])
    assert corrected["close"].tolist() == fix["close"].tolist()

    q = read_quarantine(lake)
    assert len(q) == len(bad)
    got = {
        bytes(row.value.encode()) if row.value_b64 is None else None: row.reason
        for row in q.itertuples()
    }
    for value, reasons in bad.items():
        if value.startswith(b"\xff"):
            assert any(r == "invalid_utf8" or "invalid_utf8" in r for r in q["reason"])
            continue
        assert any(reasons[0] in r.split("; ") for k, r in got.items() if k == value), value
    # nothing lost: every Kafka record is in raw, and in processed or quarantine
    total_sent = r1.sent + r2.sent + r3.sent + 1 + len(bad)
    assert len(read_raw_bars(lake)) == total_sent


def test_a_run_that_fails_midway_and_runs_again_loses_and_doubles_nothing(lake, spark, monkeypatch):
    window = dict(start="2014-01-01", end="2014-06-30")
    r = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window)
    sent = fetch_many(get_source("samples"), "MSFT,GOOG", batch_id="z", progress=False, **window)

    # 0. The check fails before its census: nothing is committed, the batch stays pending.
    def no_census(flagged):
        raise RuntimeError("check failed")

    with monkeypatch.context() as m:
        m.setattr(T, "census", no_census)
        with pytest.raises(RuntimeError, match="check failed"):
            run_batch_job(lake, spark=spark)
    assert pending_records(lake) == r.sent
    assert row_count(lake, "processed_bars") == 0

    # 1. The processed merge fails; the raw zone (written beside it) is committed.
    def failing_merge(self, *args, **kwargs):
        raise RuntimeError("processed merge failed")

    with monkeypatch.context() as m:
        m.setattr(BarsBatchJob, "_merge_processed", failing_merge)
        with pytest.raises(Exception, match="processed merge failed"):
            run_batch_job(lake, spark=spark)
    assert len(read_raw_bars(lake)) == r.sent
    assert row_count(lake, "processed_bars") == 0
    assert pending_records(lake) == r.sent  # processed is behind: the records are pending

    # 2. The next run reads the batch again: raw takes nothing of it, processed all of it.
    job = run_batch_job(lake, spark=spark)
    assert job.records_read == r.sent and job.raw_rows == 0
    assert pending_records(lake) == 0
    assert len(read_raw_bars(lake)) == r.sent
    assert_same_bars(read_bars(lake, None), expected_processed(sent.bars))

    # 3. Run again: nothing to do; nothing is doubled or lost.
    job = run_batch_job(lake, spark=spark)
    assert job.noop and job.records_read == 0
    assert len(read_raw_bars(lake)) == r.sent
    assert_same_bars(read_bars(lake, None), expected_processed(sent.bars))


def test_a_backlog_read_in_slices_gives_what_one_batch_gives(lake, spark):
    window = dict(start="2015-01-01", end="2015-12-31")
    r = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window)
    sent = fetch_many(get_source("samples"), "MSFT,GOOG", batch_id="s", progress=False, **window)

    job = run_batch_job(lake, spark=spark, max_offsets_per_trigger=r.sent // 3)
    assert job.batches >= 3 and job.records_read == r.sent
    assert len(read_raw_bars(lake)) == r.sent
    merges = [c for c in history(lake, "processed_bars", 100) if c["kafka"]]
    assert len(merges) == job.batches  # one commit per slice, each with its offsets
    assert pending_records(lake) == 0
    assert_same_bars(read_bars(lake, None), expected_processed(sent.bars))


def test_reader_prunes_partitions(lake, spark):
    ingest(lake, "samples", "MSFT,GOOG", start="2010-01-01", end="2013-12-31", progress=False)
    run_batch_job(lake, spark=spark)
    read_bars(lake)
    assert len(LastRead.files) == 4  # one file per (interval, year)
    one_month = read_bars(lake, None, "2012-03-01", "2012-03-31")
    assert len(LastRead.files) == 1 and "year=2012" in LastRead.files[0]
    assert one_month["ts"].min() >= pd.Timestamp("2012-03-01", tz="UTC")
    assert one_month["ts"].max() <= pd.Timestamp("2012-03-31 23:59:59", tz="UTC")
    assert set(one_month["symbol"]) == {"MSFT", "GOOG"}

    with pytest.warns(UserWarning, match="NOPE"):
        empty = read_bars(lake, "NOPE", "2012-01-01", "2012-12-31")
    assert empty.empty and "sma_20" in empty.columns
    none = read_bars(lake, None, "1990-01-01", "1990-12-31")
    assert none.empty and list(none.columns)[:3] == ["symbol", "interval", "ts"]
    assert LastRead.files == []


# Delta: incremental = full, engines agree, concurrency, crashes, topic lifecycle --------------


def make_bars(symbol: str, days: pd.DatetimeIndex, seed: int, batch: str) -> pd.DataFrame:
    """Daily bars of a random walk (positive prices, high >= open/close >= low)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    open_ = close * np.exp(rng.normal(0, 0.003, len(days)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, len(days)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, len(days)))
    return conform_bars(
        pd.DataFrame(
            {
                "symbol": symbol,
                "interval": "1d",
                "ts": days,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "adj_close": np.where(rng.uniform(size=len(days)) < 0.1, np.nan, close * 0.99),
                "volume": rng.integers(1_000, 1_000_000, len(days)),
                "source": "synthetic",
                "ingested_at": pd.Timestamp.now(tz="UTC"),
                "batch_id": batch,
            }
        )
    )


def corrected(rows: pd.DataFrame, rng: np.random.Generator, batch: str) -> pd.DataFrame:
    fix = rows.copy()
    fix["close"] = fix["close"] * (1 + rng.uniform(-0.02, 0.02, len(fix)))
    fix["high"] = np.maximum(fix["high"], fix["close"])
    fix["low"] = np.minimum(fix["low"], fix["close"])
    fix["ingested_at"] = pd.Timestamp.now(tz="UTC")
    fix["batch_id"] = batch
    return fix


@pytest.mark.parametrize("slice_records", [None, 250], ids=["one slice", "slices of 250"])
def test_incremental_runs_equal_a_full_recomputation(lake, spark, slice_records):
    """Random appends, corrections in the middle, filled gaps, a symbol after a long
    pause and a new symbol: after every run, processed equals pandas over everything sent,
    whether a run reads its records in one micro-batch or in several small ones."""
    rng = np.random.default_rng(24)
    days = pd.bdate_range("2019-01-01", "2020-06-30", tz="UTC")
    hold_back = set(rng.choice(len(days) - 60, 5, replace=False) + 30)  # gaps filled later
    start = [i for i in range(len(days) - 40) if i not in hold_back]
    everything = [
        make_bars("AAA", days[start], 1, "b0"),
        make_bars("BBB", days[start], 2, "b0"),
        make_bars("CCC", days[:120], 3, "b0"),  # then silent for a year
    ]
    sent = pd.concat(everything, ignore_index=True)
    produce_bars(lake, sent, progress=False)
    run_batch_job(lake, spark=spark, max_offsets_per_trigger=slice_records)
    assert_same_bars(read_bars(lake, None), expected_processed(sent))

    rounds = [
        # the next days, two corrections far back, one filled gap
        lambda: pd.concat(
            [
                make_bars("AAA", days[len(days) - 40 : len(days) - 30], 4, "r1"),
                corrected(sent[sent.symbol == "BBB"].iloc[[50, 200]], rng, "r1"),
                make_bars("AAA", days[[min(hold_back)]], 5, "r1"),
            ]
        ),
        # CCC comes back after a long pause, DDD is new, the other gaps are filled
        lambda: pd.concat(
            [
                make_bars("CCC", days[-20:], 6, "r2"),
                make_bars("DDD", days[-30:], 7, "r2"),
                *[make_bars(s, days[sorted(hold_back)[1:]], 8, "r2") for s in ("AAA", "BBB")],
                corrected(sent[sent.symbol == "AAA"].iloc[[-1]], rng, "r2"),
            ]
        ),
    ]
    for make in rounds:
        new = make()
        produce_bars(lake, new, progress=False)
        sent = pd.concat([sent, new], ignore_index=True)
        job = run_batch_job(lake, spark=spark, max_offsets_per_trigger=slice_records)
        assert job.records_read == len(new)
        assert_same_bars(read_bars(lake, None), expected_processed(sent))


def key_set(df: pd.DataFrame, key: list[str]) -> set[tuple]:
    """The keys of a frame, timestamps as UTC instants whatever the engine gave."""
    cols = [pd.to_datetime(df[c], utc=True) if "time" in str(df[c].dtype) else df[c] for c in key]
    return set(zip(*[c.astype(str) for c in cols], strict=True))


def test_every_engine_reads_the_same_rows_without_duplicate_keys(lake, spark):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    from stockpipe.lake import storage_options, table_uri

    ingest(lake, "samples", "MSFT,GOOG", start="2016-01-01", end="2016-12-31", progress=False)
    ingest(lake, "samples", "MSFT", start="2016-06-01", end="2016-06-30", progress=False)
    with ConfirmedProducer(lake, lake.topic_bars) as p:
        p.send(b"MSFT", b"{broken")
    run_batch_job(lake, spark=spark)
    keys = {"raw_bars": ["topic", "partition", "offset"], "processed_bars": list(BAR_KEY)}
    keys["quarantine_bars"] = keys["raw_bars"]
    for name, key in keys.items():
        uri, opts = table_uri(lake, name), storage_options(lake)
        by_rs = DeltaTable(uri, storage_options=opts).to_pandas()
        by_polars = pl.read_delta(uri, storage_options=opts).to_pandas()
        dataset = DeltaTable(uri, storage_options=opts).to_pyarrow_dataset()
        by_duckdb = duckdb.from_arrow(dataset).df()
        by_spark = spark.read.format("delta").load(zone(lake, name, spark=True))
        n = len(by_rs)
        assert n > 0 and len(by_polars) == len(by_duckdb) == by_spark.count() == n, name
        assert not by_rs.duplicated(key).any(), name
        for other in (by_polars, by_duckdb, by_spark.select(*key).toPandas()):
            assert key_set(other, key) == key_set(by_rs, key), name


def test_two_jobs_started_at_once_end_with_the_rows_of_one_run(lake, spark):
    import threading

    r = ingest(lake, "samples", "MSFT,GOOG", start="2017-01-01", end="2017-12-31", progress=False)
    sent = fetch_many(
        get_source("samples"),
        "MSFT,GOOG",
        batch_id="t",
        progress=False,
        start="2017-01-01",
        end="2017-12-31",
    ).bars
    reports, errors = [], []

    def run() -> None:
        try:
            reports.append(run_batch_job(lake, spark=spark))
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(rep.records_read for rep in reports) == [0, r.sent]  # one waited, found nothing
    assert len(read_raw_bars(lake)) == r.sent
    assert_same_bars(read_bars(lake, None), expected_processed(sent))


def test_a_second_writer_fails_naming_the_holder_when_told_not_to_wait(lake, spark):
    from stockpipe.errors import LeaseHeldError
    from stockpipe.lease import hold

    r = ingest(lake, "samples", "MSFT", start="2014-01-01", end="2014-01-31", progress=False)
    assert r.sent > 0
    with (
        hold(lake, ["processed/bars"], job="a test holding the table"),
        pytest.raises(LeaseHeldError, match="processed/bars is being written by a test"),
    ):
        run_batch_job(lake.model_copy(update={"lease_wait_s": 0}), spark=spark)
    assert row_count(lake, "processed_bars") == 0
    assert run_batch_job(lake, spark=spark).records_read == r.sent


KILL_SCRIPT = """
import os, signal, sys
from stockpipe.config import get_settings
from stockpipe.spark import batch as B

point = sys.argv[1]
def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "before_quarantine_commit":
    B.BarsBatchJob._write_quarantine = lambda self, *a: die()
elif point == "raw_committed_before_merge":
    def merge(self, valid, census, part):
        import time
        while self.state.progress("raw_bars").offsets.get(0, 0) < part.end.get(0, 0):
            time.sleep(0.2)
        die()
    B.BarsBatchJob._merge_processed = merge
elif point == "after_first_slice":
    done = B.BarsBatchJob.process_batch
    def process(self, batch, part):
        done(self, batch, part)
        die()
    B.BarsBatchJob.process_batch = process
B.run_batch_job(get_settings(), max_offsets_per_trigger=int(sys.argv[2]))
"""


@pytest.mark.parametrize(
    "point", ["before_quarantine_commit", "raw_committed_before_merge", "after_first_slice"]
)
def test_sigkill_of_the_job_then_a_rerun_gives_every_record_exactly_once(lake, spark, point):
    import os
    import subprocess
    import sys

    r = ingest(lake, "samples", "MSFT,GOOG", start="2011-01-01", end="2011-12-31", progress=False)
    sent = fetch_many(
        get_source("samples"),
        "MSFT,GOOG",
        batch_id="k",
        progress=False,
        start="2011-01-01",
        end="2011-12-31",
    ).bars
    bad = [b"{nope", b"\xff\xfe"]
    with ConfirmedProducer(lake, lake.topic_bars) as p:
        for value in bad:
            p.send(b"MSFT", value)
    fast = lake.model_copy(update={"lease_ttl_s": 5.0})
    env = {**os.environ, **fast.to_env(), "STOCKPIPE_ENV_FILE": str(lake.state_dir / "no.env")}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, point, str(r.sent // 2)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    job = run_batch_job(fast, spark=spark)
    assert job.records_read > 0
    raw = read_raw_bars(lake)
    assert len(raw) == r.sent + len(bad)
    assert not raw.duplicated(["topic", "partition", "offset"]).any()
    assert len(read_quarantine(lake)) == len(bad)
    assert_same_bars(read_bars(lake, None), expected_processed(sent))
    assert pending_records(lake) == 0


def test_a_replay_on_a_later_utc_date_leaves_no_record_in_two_zones(lake, spark, monkeypatch):
    from datetime import UTC, datetime

    from stockpipe.lake import filesystem, zone
    from stockpipe.tables import open_table

    r = ingest(lake, "samples", "GOOG", start="2013-05-01", end="2013-05-31", progress=False)
    with ConfirmedProducer(lake, lake.topic_bars) as p:
        p.send(b"GOOG", b"[1, 2]")
    job = BarsBatchJob(lake, spark)
    job.now = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    with monkeypatch.context() as m:
        m.setattr(
            BarsBatchJob,
            "_merge_processed",
            lambda *a: (_ for _ in ()).throw(RuntimeError("died before the merge")),
        )
        with pytest.raises(RuntimeError, match="died before the merge"):
            job.run()
    assert len(read_quarantine(lake)) == 1
    again = BarsBatchJob(lake, spark)
    again.now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
    again.run()
    raw, q, processed = read_raw_bars(lake), read_quarantine(lake), read_bars(lake, None)
    assert len(raw) == r.sent + 1 and len(q) == 1 and len(processed) == r.sent
    assert set(q["offset"]) & set(raw.loc[raw.value.str.startswith("{"), "offset"]) == set()
    fs = filesystem(lake)
    for name in ("raw_bars", "quarantine_bars", "processed_bars"):
        root = zone(lake, name)
        stored = {f[len(root) + 1 :] for f in fs.find(root) if "/_delta_log/" not in f}
        paths = pa.table(open_table(lake, name).get_add_actions()).column("path").to_pylist()
        assert stored == set(paths), name  # nothing dangling


def test_a_recreated_topic_stops_the_job_with_the_documented_reset(lake, spark):
    import time

    from stockpipe.errors import TopicResetError
    from stockpipe.kafka import admin_client

    r = ingest(lake, "samples", "MSFT", start="2012-01-01", end="2012-03-31", progress=False)
    run_batch_job(lake, spark=spark)
    admin = admin_client(lake)
    admin.delete_topics([lake.topic_bars])
    admin.close()
    time.sleep(2)
    ensure_topics(lake, [lake.topic_bars], partitions=3)
    r2 = ingest(lake, "samples", "MSFT", start="2012-04-01", end="2012-04-30", progress=False)
    with pytest.raises(TopicResetError, match=r"deleted and created again.*--reset-topic earliest"):
        run_batch_job(lake, spark=spark)
    with pytest.raises(TopicResetError, match="deleted and created again"):
        run_batch_job(lake)  # the check comes before the no-Spark shortcut too
    job = run_batch_job(lake, spark=spark, reset_topic="earliest")
    assert job.records_read == r2.sent
    assert len(read_raw_bars(lake)) == r.sent + r2.sent
    assert len(read_bars(lake, "MSFT")) == r.sent + r2.sent


def test_processed_rebuilt_from_raw_equals_the_run_from_kafka(lake, spark):
    ingest(lake, "samples", "MSFT,GOOG", start="2015-01-01", end="2015-08-31", progress=False)
    ingest(lake, "samples", "GOOG", start="2015-03-01", end="2015-03-31", progress=False)
    with ConfirmedProducer(lake, lake.topic_bars) as p:
        p.send(b"GOOG", b"\xff not utf-8")
        p.send(b"GOOG", b'{"symbol": "GOOG"}')
    run_batch_job(lake, spark=spark)
    from_kafka = read_bars(lake, None)
    q_kafka = read_quarantine(lake)
    BarsBatchJob(lake, spark).rebuild()
    pd.testing.assert_frame_equal(read_bars(lake, None), from_kafka)
    q = read_quarantine(lake)
    assert q[["offset", "reason", "value_b64"]].equals(q_kafka[["offset", "reason", "value_b64"]])
    assert pending_records(lake) == 0
    assert run_batch_job(lake, spark=spark).noop


def test_a_lake_made_before_key_b64_gains_the_column(lake, spark):
    """Raw and quarantine tables written before keys were kept base64 take the new
    column on the next append; old rows read it as null."""
    s = lake
    with ConfirmedProducer(s, s.topic_bars) as p:
        p.send(b"MSFT", b"{old")
    run_batch_job(s, spark=spark)
    for name in ("raw_bars", "quarantine_bars"):  # the layout of the tables before
        path = zone(s, name, spark=True)
        old = spark.read.format("delta").load(path).drop("key_b64").localCheckpoint()
        with session_conf(spark, {"spark.sql.sources.partitionOverwriteMode": "static"}):
            writer = old.write.format("delta").mode("overwrite")
            writer.option("overwriteSchema", "true").partitionBy(*PARTITIONS[name]).save(path)
        assert "key_b64" not in spark.read.format("delta").load(path).columns

    with ConfirmedProducer(s, s.topic_bars) as p:
        p.send(b"MS\xffFT", b"{new")
    report = run_batch_job(s, spark=spark)
    assert report.records_read == 1 and report.quarantined_rows == 1
    for reader in (read_raw_bars, read_quarantine):
        rows = reader(s).sort_values("offset")
        assert rows["value"].tolist() == ["{old", "{new"]
        assert rows["key_b64"].isna().tolist() == [True, False]
        assert rows["key_b64"].iloc[1] == "TVP/RlQ="  # base64 of b"MS\xffFT"
