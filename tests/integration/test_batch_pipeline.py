"""Samples -> producer -> Kafka -> Spark batch job -> raw/processed/quarantine, for real."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest

from stockpipe.ingest import ingest, produce_bars
from stockpipe.kafka import ConfirmedProducer, ensure_topics, read_all
from stockpipe.lake import ensure_bucket
from stockpipe.reader import LastRead, read_bars, read_quarantine, read_raw_bars
from stockpipe.sources import fetch_many, get_source
from stockpipe.spark import transforms as T
from stockpipe.spark.batch import BarsBatchJob, pending_records, run_batch_job
from stockpipe.tables import history, row_count

pytestmark = pytest.mark.integration


def expected_processed(bars: pd.DataFrame) -> pd.DataFrame:
    """The processed zone computed independently with pandas."""
    df = bars.sort_values("ingested_at", kind="stable")
    df = df.drop_duplicates(["symbol", "interval", "ts"], keep="last")
    df = df.sort_values(["symbol", "interval", "ts"]).reset_index(drop=True)
    price = df["adj_close"].fillna(df["close"])
    g = price.groupby([df["symbol"], df["interval"]])
    prev = g.shift(1)
    df["return"] = price / prev - 1
    df["log_return"] = np.log(price / prev)
    df["sma_20"] = g.transform(lambda s: s.rolling(20).mean())
    df["sma_50"] = g.transform(lambda s: s.rolling(50).mean())
    df["volatility_20"] = df.groupby(["symbol", "interval"])["log_return"].transform(
        lambda s: s.rolling(20).std()
    )
    df["range_pct"] = (df["high"] - df["low"]) / df["close"] * 100
    return df


def assert_same_bars(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    cols = [
        "symbol",
        "interval",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "adj_close",
        "volume",
        "return",
        "log_return",
        "sma_20",
        "sma_50",
        "volatility_20",
        "range_pct",
    ]
    a = actual.loc[:, cols].sort_values(["symbol", "ts"]).reset_index(drop=True)
    e = expected.loc[:, cols].sort_values(["symbol", "ts"]).reset_index(drop=True)
    a["volume"] = a["volume"].astype("int64")
    e["volume"] = e["volume"].astype("int64")
    a["ts"] = pd.to_datetime(a["ts"], utc=True).astype("datetime64[us, UTC]")
    e["ts"] = pd.to_datetime(e["ts"], utc=True).astype("datetime64[us, UTC]")
    pd.testing.assert_frame_equal(a, e, check_exact=False, rtol=1e-9, atol=1e-12)


@pytest.fixture
def lake(settings):
    """A fresh bucket and topic for one test: runs never see each other's data."""
    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"bucket": f"lake-{run}", "topic_bars": f"bars.{run}"})
    ensure_bucket(s)
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
