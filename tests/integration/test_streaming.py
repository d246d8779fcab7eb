"""The tick producer and the streaming job on the real stack (Kafka, Spark, MinIO).

Every window the job writes is compared with windows computed by pandas
(``oracles.tick_windows``) from the ticks read back from Kafka; the lake is read
with ``deltalake`` (stockpipe.reader) and with Spark's ``format("delta")``.
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pyarrow.dataset as ds
import pytest
from oracles.tick_windows import (
    compare_windows,
    late_pairs,
    parse_tick_values,
    reference_windows,
    valid,
)

from stockpipe.errors import LeaseHeldError
from stockpipe.kafka import ConfirmedProducer, end_offsets, ensure_topics, read_all
from stockpipe.lake import ZONES, filesystem, zone
from stockpipe.lease import hold
from stockpipe.reader import (
    read_quarantined_ticks,
    read_raw_ticks,
    read_stream_metrics,
    read_tick_windows,
)
from stockpipe.spark.streaming import TABLES, StreamOptions, run_stream
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.tables import open_table
from stockpipe.ticks import LATE, OUT_OF_ORDER, TickSpec, run_producer

pytestmark = pytest.mark.integration

BASE = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)
SYMBOLS = ("AAPL", "MSFT", "NVDA")
WINDOW, SLIDE, WATERMARK = "10 seconds", "5 seconds", "5 seconds"
DELAY_MS = 5_000


def _own(settings, name: str):
    """Settings with a bucket and a topic of the test's own."""
    s = settings.model_copy(update={"bucket": f"test-{name}", "topic_ticks": f"test.{name}"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_ticks], partitions=3)
    return s


def _spec(producer_id: str, **kw) -> TickSpec:
    args = dict(
        symbols=SYMBOLS,
        seed=1,
        rate=100,
        start_ms=BASE,
        step_ms=20,  # 50 ticks per event-time second
        out_of_order_fraction=0.15,
        out_of_order_max_ms=4_000,  # within the 5 s watermark: counted
        producer_id=producer_id,
    )
    args.update(kw)
    return TickSpec(**args)


def _bad_values() -> list[tuple[bytes, bytes, str]]:
    good = {
        "schema_version": 1,
        "symbol": "AAPL",
        "ts": BASE + 20_000,
        "price": 190.5,
        "size": 100,
        "seq": 0,
        "producer_id": "bad",
    }
    cases = [
        (b"not json", "unparsable_json"),
        (json.dumps({**good, "price": 0}).encode(), "non_positive_price"),
        (json.dumps({**good, "size": -5}).encode(), "non_positive_size"),
        (
            json.dumps({k: v for k, v in good.items() if k != "symbol"}).encode(),
            "missing_symbol",
        ),
        (json.dumps({**good, "ts": "noon"}).encode(), "wrong_type_ts"),
        # bytes that are not UTF-8: the zones stay readable, the bytes recoverable
        (b"\xff\xfe garbage", "invalid_utf8; unparsable_json"),
        (
            json.dumps({**good, "symbol": "AAXPL"}).encode().replace(b"AAXPL", b"AA\xffPL"),
            "invalid_utf8; bad_symbol",
        ),
        # ahead of its Kafka time by more than the watermark delay: it would make the
        # honest ticks of the next minute late
        (json.dumps({**good, "ts": int(time.time() * 1000) + 60_000}).encode(), "future_ts"),
    ]
    bad_key = (b"K\xff", b"\xff", "invalid_utf8; unparsable_json")
    return [(b"AAPL", v, r) for v, r in cases] + [bad_key]


def _as_sent(quarantined: pd.DataFrame) -> list[bytes]:
    """The quarantined values' bytes as sent (base64 where they were not UTF-8)."""
    import base64

    return [
        base64.b64decode(b64) if isinstance(b64, str) else v.encode()
        for v, b64 in zip(quarantined["value"], quarantined["value_b64"], strict=True)
    ]


def _kafka_ticks(s, topic: str | None = None) -> tuple[pd.DataFrame, int]:
    """The ticks in Kafka but the bad ones (all quarantined: the pandas reference knows
    no "ahead of its Kafka time" rule), and how many records the topic holds."""
    values = [v for _, _, _, v in read_all(s, topic or s.topic_ticks)]
    ticks = parse_tick_values(values)
    return ticks[ticks["producer_id"] != "bad"].reset_index(drop=True), len(values)


def _via_spark(spark, s, zone_name: str) -> pd.DataFrame:
    return spark.read.format("delta").load(zone(s, zone_name, spark=True)).toPandas()


def _expected(ticks: pd.DataFrame, phases: dict[str, int]) -> pd.DataFrame:
    ticks = ticks.assign(phase=ticks["producer_id"].map(phases).fillna(99))
    return reference_windows(
        ticks, window=WINDOW, slide=SLIDE, watermark=WATERMARK, order=["phase", "seq"]
    )


def test_producer_holds_its_rate_and_reports_what_kafka_has(settings):
    s = _own(settings, "rate")
    report = run_producer(s, _spec("rate-1", start_ms=None), rate=3000, duration_s=4)
    assert report.stopped_by == "duration" and report.failed == 0
    assert report.rate == pytest.approx(3000, rel=0.05)
    assert report.sent == report.generated == sum(end_offsets(s, s.topic_ticks).values())
    keys = pd.Series([k.decode() for _, _, k, _ in read_all(s, s.topic_ticks)]).value_counts()
    assert keys.to_dict() == report.delivery.per_key
    ticks, _ = _kafka_ticks(s)
    assert ticks["seq"].sort_values().tolist() == list(range(report.sent))
    now_ms = time.time() * 1000
    assert ticks["ts"].between(now_ms - 60_000, now_ms).all()  # live event time


def test_producer_stops_on_stop_event_and_on_interrupt_flushing_everything(settings):
    s = _own(settings, "stop")
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    first = run_producer(s, _spec("stop-1"), rate=2000, stop=stop)
    assert first.stopped_by == "stop" and first.sent == first.generated > 0

    threading.Timer(1.5, _thread.interrupt_main).start()
    second = run_producer(s, _spec("stop-2"), rate=2000, duration_s=30)
    assert second.stopped_by == "interrupt" and second.sent == second.generated > 0
    assert sum(end_offsets(s, s.topic_ticks).values()) == first.sent + second.sent


def test_windows_equal_pandas_with_out_of_order_late_and_bad_ticks(settings, spark, stream_spark):
    s = _own(settings, "windows")
    opts = StreamOptions(
        window=WINDOW,
        slide=SLIDE,
        watermark=WATERMARK,
        mode="available-now",
        name="t_windows",
        duration_s=300,
        state_partitions=2,
    )
    # Phase 1: 30 s of event time, in order and out of order (within the watermark).
    p1 = run_producer(s, _spec("phase-1"), rate=5000, max_ticks=1500)
    run1 = run_stream(s, opts, spark=stream_spark)
    assert run1.stopped_by == "backlog done"
    # Phase 2: the next 30 s, with late ticks far behind the watermark, and bad ticks.
    spec2 = _spec("phase-2", seed=2, start_ms=BASE + 30_000, late_fraction=0.05, late_by_ms=600_000)
    p2 = run_producer(s, spec2, rate=5000, max_ticks=1500)
    bad = _bad_values()
    with ConfirmedProducer(s, s.topic_ticks) as producer:
        producer.send_many((k, v) for k, v, _ in bad)
    run2 = run_stream(s, opts, spark=stream_spark)
    assert p1.kinds[OUT_OF_ORDER] > 100 and p2.kinds[LATE] > 30

    ticks, n_records = _kafka_ticks(s)
    expected = _expected(ticks, {"phase-1": 0, "phase-2": 1})
    assert len(expected) > 30

    # Outside Spark (deltalake through the library's reader) and through Spark: equal.
    assert compare_windows(read_tick_windows(s), expected) == []
    assert compare_windows(_via_spark(spark, s, "tick_windows"), expected) == []
    lo, hi = expected["window_start"].iloc[[3, -3]]
    some = expected[(expected["window_start"] >= lo) & (expected["window_start"] < hi)]
    some = some[some["symbol"] == "MSFT"]
    assert compare_windows(read_tick_windows(s, lo, hi, symbols=["msft"]), some) == []

    # The final watermark is the newest valid event time minus the delay.
    metrics = read_stream_metrics(s, "t_windows")
    assert metrics["watermark"].max() == pd.Timestamp(
        valid(ticks)["ts"].max() - DELAY_MS, unit="ms", tz="UTC"
    )
    # Out-of-order ticks were counted; late ones dropped and counted as dropped.
    run1_ids = {r["run_id"] for r in run1.metrics}
    dropped_1 = metrics.loc[metrics["run_id"].isin(run1_ids), "late_rows_dropped"].sum()
    dropped_2 = metrics.loc[~metrics["run_id"].isin(run1_ids), "late_rows_dropped"].sum()
    late = late_pairs(
        ticks.assign(phase=ticks["producer_id"].map({"phase-1": 0, "phase-2": 1})),
        window=WINDOW,
        slide=SLIDE,
        watermark=WATERMARK,
        order=["phase", "seq"],
    )
    assert dropped_1 == 0
    # Spark counts rows dropped after partial aggregation: one per (symbol, window).
    assert dropped_2 == len(late.drop_duplicates(["symbol", "window_start_ms"]))
    assert run2.late_rows_dropped == dropped_2

    # Raw keeps every record once; quarantine holds the bad ones with their reason.
    raw = read_raw_ticks(s)
    assert len(raw) == n_records == p1.sent + p2.sent + len(bad)
    assert not raw.duplicated(["partition", "offset"]).any()
    quarantined = read_quarantined_ticks(s)
    assert sorted(zip(_as_sent(quarantined), quarantined["reason"], strict=True)) == sorted(
        (v, r) for _, v, r in bad
    )


def _child_env(s) -> dict[str, str]:
    env = {**os.environ, **s.to_env()}
    env["STOCKPIPE_ENV_FILE"] = str(s.state_dir / "no.env")
    return env


def _stream_cmd(name: str, mode: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "stockpipe.cli", "stream", "--mode", mode, "--name", name,
        "--window", WINDOW, "--slide", SLIDE, "--watermark", WATERMARK,
        "--state-partitions", "2", *extra,
    ]  # fmt: skip


def _committed(s, zone_name: str) -> list[str]:
    """Data files of the table's current Delta version (bucket/key paths)."""
    dt = open_table(s, zone_name)
    return [] if dt is None else [u.split("://", 1)[-1] for u in dt.file_uris()]


def _uncommitted(s, zone_name: str) -> list[str]:
    """Data files on storage that no Delta version names (a micro-batch that never committed)."""
    fs = filesystem(s)
    root = zone(s, zone_name)
    if not fs.exists(root):
        return []
    on_storage = {f for f in fs.find(root) if f.endswith(".parquet") and "/_delta_log/" not in f}
    return sorted(on_storage - set(_committed(s, zone_name)))


def test_sigkill_mid_run_then_restart_gives_exactly_the_pandas_windows(settings, spark, tmp_path):
    s = _own(settings, "crash")
    name = "t_crash"
    p1 = run_producer(s, _spec("crash-1"), rate=5000, max_ticks=1500)  # 30 s of event time
    log = (tmp_path / "stream.log").open("w")
    child = subprocess.Popen(
        _stream_cmd(name, "continuous", "--trigger", "1 second", "--max-offsets-per-trigger",
                    "250", "--duration", "600"),
        env=_child_env(s), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        # Late ticks must not land in the very first batch (no watermark yet).
        _wait(lambda: len(read_stream_metrics(s, name)) >= 1, 240, child, tmp_path)
        spec2 = _spec(
            "crash-2", seed=2, start_ms=BASE + 50_000, late_fraction=0.05, late_by_ms=600_000
        )
        p2 = run_producer(s, spec2, rate=5000, max_ticks=1000)
        bad = _bad_values()
        with ConfirmedProducer(s, s.topic_ticks) as producer:
            producer.send_many((k, v) for k, v, _ in bad)
        _wait(lambda: len(read_stream_metrics(s, name)) >= 4, 240, child, tmp_path)
        # Kill the whole process tree (Python driver and JVM) while a batch is writing,
        # if we catch one; otherwise right away.
        caught = _kill_while_writing(s, child, seconds=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    batches_before = read_stream_metrics(s, name)["batch_id"].max()
    assert batches_before >= 3
    total = p1.sent + p2.sent + len(bad)
    windows_before = len(read_tick_windows(s))

    orphans = _uncommitted(s, "tick_windows")
    # the killed job's leases are still there: the restart waits for them to expire
    restart = subprocess.run(
        _stream_cmd(name, "available-now", "--duration", "300", "--lease-wait", "120"),
        env=_child_env(s), capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]

    ticks, n_records = _kafka_ticks(s)
    expected = _expected(ticks, {"crash-1": 0, "crash-2": 1})
    assert windows_before < len(expected)  # it was killed mid-run
    assert compare_windows(read_tick_windows(s), expected) == []
    assert compare_windows(_via_spark(spark, s, "tick_windows"), expected) == []
    metrics = read_stream_metrics(s, name)
    assert metrics["watermark"].max() == pd.Timestamp(
        valid(ticks)["ts"].max() - DELAY_MS, unit="ms", tz="UTC"
    )

    # Raw and quarantine are exactly-once too.
    raw = read_raw_ticks(s)
    assert len(raw) == n_records == total and not raw.duplicated(["partition", "offset"]).any()
    quarantined = read_quarantined_ticks(s)
    assert sorted(quarantined["reason"]) == sorted(r for _, _, r in bad)

    # Files of an uncommitted micro-batch never show up as rows. If the kill left
    # none behind, leave one the way a killed batch does: a data file not in the log.
    fs = filesystem(s)
    if not orphans:
        src = _committed(s, "tick_windows")[0]
        orphan = src.rsplit("/", 1)[0] + "/part-99999-uncommitted.c000.zstd.parquet"
        fs.copy(src, orphan)
        orphans = [orphan]
    print(f"uncommitted files ({'left by the kill' if caught else 'made'}): {len(orphans)}")
    assert set(orphans) & set(_uncommitted(s, "tick_windows"))
    # a reader that lists the files instead of reading the log would double-count
    everything = ds.dataset(zone(s, "tick_windows"), filesystem=fs, format="parquet")
    assert everything.count_rows() > len(expected)
    assert compare_windows(read_tick_windows(s), expected) == []


def _wait(cond, timeout: float, child: subprocess.Popen, tmp_path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(
                f"streaming job exited early:\n{(tmp_path / 'stream.log').read_text()[-3000:]}"
            )
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out:\n{(tmp_path / 'stream.log').read_text()[-3000:]}")


def _kill_while_writing(s, child: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL the job's process group, at a moment its sink has uncommitted files if seen."""
    deadline = time.monotonic() + seconds
    caught = False
    while time.monotonic() < deadline and child.poll() is None:
        if _uncommitted(s, "tick_windows"):
            caught = True
            break
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    return caught


def test_a_second_query_with_another_name_on_a_written_lake_keeps_every_record(
    settings, spark, stream_spark
):
    """Delta's sink keys its batches by query id: a new checkpoint's batch 0 is not skipped.

    (The Parquet file sink's shared ``_spark_metadata`` log took the new query's
    batches for committed ones and dropped all its records.)
    """
    s = _own(settings, "second")
    first, second = s.topic_ticks, f"{s.topic_ticks}.b"
    ensure_topics(s, [second], partitions=3)
    common = dict(
        window=WINDOW, slide=SLIDE, watermark=WATERMARK, mode="available-now",
        duration_s=300, state_partitions=2,
    )  # fmt: skip
    run_producer(s, _spec("second-a"), rate=5000, max_ticks=1000)
    run_a = run_stream(s, StreamOptions(name="t_second_a", **common), spark=stream_spark)
    assert run_a.stopped_by == "backlog done" and len(read_tick_windows(s)) > 0

    # Other symbols, so each window key belongs to one topic's reference; 30 s of
    # event time, so the watermark closes a few windows of each symbol.
    spec_b = _spec("second-b", seed=3, symbols=("AMZN", "TSLA"), step_ms=60)
    sent_b = run_producer(s, spec_b, rate=5000, max_ticks=500, topic=second).sent
    bad = _bad_values()
    with ConfirmedProducer(s, second) as producer:
        producer.send_many((k, v) for k, v, _ in bad)
    opts_b = StreamOptions(name="t_second_b", topic=second, **common)
    run_b = run_stream(s, opts_b, spark=stream_spark)
    assert run_b.stopped_by == "backlog done"
    assert run_b.input_rows["t_second_b_archive"] == sent_b + len(bad)

    raw = read_raw_ticks(s)
    assert not raw.duplicated(["topic", "partition", "offset"]).any()
    in_kafka = {t: sum(end_offsets(s, t).values()) for t in (first, second)}
    assert raw["topic"].value_counts().to_dict() == in_kafka
    assert in_kafka[second] == sent_b + len(bad) == 500 + len(bad)
    quarantined = read_quarantined_ticks(s)
    assert sorted(quarantined["reason"]) == sorted(r for _, _, r in bad)
    assert set(quarantined["topic"]) == {second}

    ticks_a, _ = _kafka_ticks(s, first)
    ticks_b, _ = _kafka_ticks(s, second)
    expected_a = _expected(ticks_a, {"second-a": 0})
    expected_b = _expected(ticks_b, {"second-b": 0})
    assert len(expected_a) >= 6 and len(expected_b) >= 6
    expected = pd.concat([expected_a, expected_b], ignore_index=True)
    assert compare_windows(read_tick_windows(s), expected) == []
    assert compare_windows(_via_spark(spark, s, "tick_windows"), expected) == []
    assert set(read_stream_metrics(s)["query_name"]) == {
        f"t_second_{q}{r}" for q in "ab" for r in ("", "_archive")
    }


def test_a_second_streaming_job_fails_naming_the_job_that_holds_the_tables(
    settings, spark, stream_spark
):
    s = _own(settings, "lease")
    run_producer(s, _spec("lease-1"), rate=5000, max_ticks=100)
    opts = StreamOptions(
        window=WINDOW, slide=SLIDE, watermark=WATERMARK, mode="available-now",
        name="t_lease", duration_s=300, state_partitions=2,
    )  # fmt: skip
    with hold(s, [ZONES[t] for t in TABLES], job="streaming job t_first"):
        with pytest.raises(LeaseHeldError, match="streaming job t_first"):
            run_stream(s, opts, spark=stream_spark)
        # the command line says so too, and waits as long as told first
        t0 = time.monotonic()
        cli = subprocess.run(
            _stream_cmd("t_lease", "available-now", "--lease-wait", "3"),
            env=_child_env(s), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 3, cli.stdout[-3000:] + cli.stderr[-3000:]
        assert "streaming job t_first" in cli.stderr and "Traceback" not in cli.stderr
        assert time.monotonic() - t0 >= 3
    assert open_table(s, "raw_ticks") is None  # nothing was written
    # released: the job runs
    assert run_stream(s, opts, spark=stream_spark).stopped_by == "backlog done"
    assert len(read_raw_ticks(s)) == 100


# Exactly once whatever the operator does: the tables keep the offsets and the windows


def _opts(name: str, **kw) -> StreamOptions:
    args = dict(
        window=WINDOW, slide=SLIDE, watermark=WATERMARK, mode="available-now", name=name,
        duration_s=300, state_partitions=2,
    )  # fmt: skip
    return StreamOptions(**{**args, **kw})


def test_a_second_name_on_a_processed_topic_adds_each_record_and_window_once(
    settings, stream_spark
):
    s = _own(settings, "rename")
    p1 = run_producer(s, _spec("rename-1"), rate=5000, max_ticks=1500)
    run_stream(s, _opts("t_rename_a"), spark=stream_spark)
    windows_a = len(read_tick_windows(s))
    assert windows_a > 0
    p2 = run_producer(
        s, _spec("rename-2", seed=2, start_ms=BASE + 30_000), rate=5000, max_ticks=1000
    )
    second = run_stream(s, _opts("t_rename_b"), spark=stream_spark)
    # a new checkpoint starts where raw/ticks is, not at the topic's first record
    assert second.input_rows["t_rename_b_archive"] == p2.sent

    ticks, n_records = _kafka_ticks(s)
    expected = _expected(ticks, {"rename-1": 0, "rename-2": 1})
    assert len(expected) > windows_a

    def exactly_once() -> None:
        raw = read_raw_ticks(s)
        assert len(raw) == n_records == p1.sent + p2.sent
        assert not raw.duplicated(["partition", "offset"]).any()
        assert compare_windows(read_tick_windows(s), expected) == []

    exactly_once()
    # the first name again, on its old checkpoint: it closes its open windows, which
    # the table holds already
    again = run_stream(s, _opts("t_rename_a"), spark=stream_spark)
    assert again.input_rows.get("t_rename_a_archive", 0) == 0
    exactly_once()


def test_a_changed_window_definition_stops_or_replaces_the_windows_whole(settings, stream_spark):
    from stockpipe.errors import WindowDefinitionError

    s = _own(settings, "redefine")
    run_producer(s, _spec("redefine-1"), rate=5000, max_ticks=1500)
    run_stream(s, _opts("t_redefine"), spark=stream_spark)
    before = read_tick_windows(s)
    assert len(before) > 0
    wider = dict(window="20 seconds", slide="10 seconds")
    # on its checkpoint or a new one: the table holds the other definition
    for name in ("t_redefine", "t_redefine_other"):
        with pytest.raises(
            WindowDefinitionError, match=r"10 seconds every 5 seconds.*--replace-windows"
        ):
            run_stream(s, _opts(name, **wider), spark=stream_spark)
    assert compare_windows(read_tick_windows(s), before) == []

    # windows open across the change: the replacement computes them whole
    run_producer(s, _spec("redefine-2", seed=2, start_ms=BASE + 30_000), rate=5000, max_ticks=1000)
    run_stream(s, _opts("t_redefine", replace_windows=True, **wider), spark=stream_spark)
    ticks, _ = _kafka_ticks(s)
    phased = ticks.assign(phase=ticks["producer_id"].map({"redefine-1": 0, "redefine-2": 1}))
    expected = reference_windows(
        phased, window="20 seconds", slide="10 seconds", watermark=WATERMARK, order=["phase", "seq"]
    )
    assert len(expected) > 10
    assert compare_windows(read_tick_windows(s), expected) == []
    with pytest.raises(WindowDefinitionError, match=r"20 seconds every 10 seconds"):
        run_stream(s, _opts("t_redefine"), spark=stream_spark)


def test_a_recreated_tick_topic_stops_the_job_until_it_is_reset(settings, stream_spark):
    from stockpipe.errors import TopicResetError
    from stockpipe.kafka import admin_client

    s = _own(settings, "recreate")
    run_producer(s, _spec("recreate-1"), rate=5000, max_ticks=100)
    run_stream(s, _opts("t_recreate"), spark=stream_spark)
    assert len(read_raw_ticks(s)) == 100
    admin = admin_client(s)
    admin.delete_topics([s.topic_ticks])
    admin.close()
    time.sleep(2)
    ensure_topics(s, [s.topic_ticks], partitions=3)
    later = BASE + 60_000
    p2 = run_producer(s, _spec("recreate-2", seed=2, start_ms=later), rate=5000, max_ticks=300)
    with pytest.raises(
        TopicResetError, match=r"deleted and created again.*stockpipe stream --reset-topic earliest"
    ):
        run_stream(s, _opts("t_recreate"), spark=stream_spark)
    assert len(read_raw_ticks(s)) == 100  # nothing skipped, nothing written

    run_stream(s, _opts("t_recreate", reset_topic="earliest"), spark=stream_spark)
    raw = read_raw_ticks(s)
    new = raw[raw["value"].str.contains('"recreate-2"')]
    assert len(raw) == 100 + p2.sent and len(new) == p2.sent
    assert not new.duplicated(["partition", "offset"]).any()
    assert new.groupby("partition")["offset"].min().eq(0).all()  # from its first record
    ticks, _ = _kafka_ticks(s)
    expected = _expected(ticks, {"recreate-2": 0})
    windows = read_tick_windows(s)
    since = pd.Timestamp(later - 20_000, unit="ms", tz="UTC")
    assert len(expected) > 0
    assert compare_windows(windows[windows["window_start"] >= since], expected) == []
