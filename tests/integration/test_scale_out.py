"""The same jobs on real clusters: a Spark standalone master with two workers, and a
three-broker KRaft Kafka cluster that loses a broker (SIGKILL) while data flows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from oracles.tick_windows import compare_windows, parse_tick_values, reference_windows

from stockpipe.ingest import produce_bars
from stockpipe.kafka import ConfirmedProducer, admin_client, end_offsets, ensure_topics, read_all
from stockpipe.reader import (
    read_bars,
    read_quarantine,
    read_raw_bars,
    read_stream_metrics,
    read_tick_windows,
)
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.spark.batch import run_batch_job
from stockpipe.stack.manager import Stack, isolated_settings
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.stack.services import free_port
from stockpipe.stack.spark_cluster import SparkWorker, spark_cluster_services
from stockpipe.stack.spark_connect import SparkConnect
from stockpipe.ticks import TickSpec, run_producer

pytestmark = pytest.mark.integration

BASE_MS = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)
WINDOW, SLIDE, WATERMARK = "10 seconds", "5 seconds", "5 seconds"


def _env(s) -> dict[str, str]:
    env = {**os.environ, **s.to_env()}
    env["STOCKPIPE_ENV_FILE"] = str(Path(s.state_dir) / "no.env")
    return env


def _run(cmd: list[str], s, timeout: float = 600) -> str:
    out = subprocess.run(cmd, env=_env(s), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _stream_cmd(
    name: str, mode: str = "available-now", *extra: str, watermark: str = WATERMARK
) -> list[str]:
    return [
        sys.executable, "-m", "stockpipe.cli", "stream", "--mode", mode,
        "--name", name, "--window", WINDOW, "--slide", SLIDE, "--watermark", watermark,
        "--state-partitions", "2", "--duration", "400", *extra,
    ]  # fmt: skip


def _expected_windows(
    s, phases: dict[str, int] | None = None, watermark: str = WATERMARK
) -> pd.DataFrame:
    """Windows by pandas; ``phases`` orders the producers' ticks as the job saw them."""
    ticks = parse_tick_values([v for _, _, _, v in read_all(s, s.topic_ticks)])
    ticks = ticks.assign(phase=ticks["producer_id"].map(phases or {}).fillna(0))
    return reference_windows(
        ticks, window=WINDOW, slide=SLIDE, watermark=watermark, order=["phase", "seq"]
    )


def _spec(producer_id: str, **kw) -> TickSpec:
    args = dict(
        symbols=("AAPL", "MSFT", "NVDA"),
        seed=7,
        rate=100,
        start_ms=BASE_MS,
        step_ms=20,
        out_of_order_fraction=0.1,
        out_of_order_max_ms=3_000,
        producer_id=producer_id,
    )
    args.update(kw)
    return TickSpec(**args)


# Spark standalone --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(settings):
    """A master and two one-core workers on 127.0.0.1, next to the test stack."""
    s = settings.model_copy(
        update={
            "spark_cluster": True,
            "spark_master_port": free_port(),
            "spark_master_ui_port": free_port(),
            "spark_workers": 2,
            # the Connect server takes one core of each worker (half the cluster), the
            # streaming job's driver the other
            "spark_worker_cores": 2,
            "spark_worker_memory": "2g",
            "spark_executor_memory": "768m",
            "spark_driver_memory": "1g",
            "spark_connect_port": free_port(),
        }
    )
    # the jobs' Spark Connect server, its tasks on the cluster (the streaming job's own
    # driver goes to the master itself)
    connect = SparkConnect("spark-connect-cluster", s)
    stack = Stack(s, [*spark_cluster_services(s), connect])
    try:
        stack.up(log=lambda _m: None)
        yield stack
    finally:
        stack.down(log=lambda _m: None)


def _workers(stack: Stack) -> list:
    return [svc for svc in stack.services if isinstance(svc, SparkWorker)]


def _executors_ran(stack: Stack) -> int:
    """Executor directories the workers created (one per application and worker)."""
    return sum(len(list(svc.data_dir.glob("app-*/*"))) for svc in _workers(stack))


def _tasks_run(stack: Stack) -> list[int]:
    """Tasks each worker's executors have started, from their logs."""
    return [
        sum(
            f.read_text(errors="replace").count("Running task")
            for f in svc.data_dir.glob("app-*/*/stderr")
        )
        for svc in _workers(stack)
    ]


def test_batch_job_on_a_standalone_cluster_equals_local_mode(settings, spark, cluster):
    local = settings.model_copy(update={"bucket": "scale-local", "topic_bars": "scale.bars"})
    on_cluster = cluster.settings.model_copy(
        update={"bucket": "scale-cluster", "topic_bars": "scale.bars"}
    )
    for s in (local, on_cluster):
        provision_bucket(s)
    ensure_topics(local, [local.topic_bars])
    bars = synthetic_bars(
        12, pd.Timestamp("2023-01-02"), pd.Timestamp("2024-06-01"), "1d", seed=5, batch_id="a"
    )
    produce_bars(local, bars, local.topic_bars, progress=False)
    # a correction of some bars, re-sent later, and one record that is not JSON
    fix = bars[bars["ts"] >= pd.Timestamp("2024-05-01", tz="UTC")].copy()
    fix["close"] = fix["close"] * 1.01
    fix["high"] = fix[["high", "close"]].max(axis=1)
    fix["ingested_at"] = fix["ingested_at"] + pd.Timedelta(minutes=5)
    produce_bars(local, fix, local.topic_bars, progress=False)
    with ConfirmedProducer(local, local.topic_bars) as producer:
        producer.send_many([(b"BAD", b"\x00 not json")])

    run_batch_job(local, spark=spark)
    before = _tasks_run(cluster)
    summary = _run([sys.executable, "-m", "stockpipe.cli", "batch"], on_cluster)
    after = _tasks_run(cluster)
    assert len(after) == 2 and all(a > b for a, b in zip(after, before, strict=True)), (
        f"the job did not run tasks on both workers: {before} -> {after}"
    )
    assert f"{len(bars) + len(fix) + 1} records read" in summary

    a, b = read_bars(local), read_bars(on_cluster)
    assert len(a) == len(bars) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (b.loc[b["ts"] >= pd.Timestamp("2024-05-01", tz="UTC"), "close"].to_numpy() > 0).all()
    assert len(read_raw_bars(local)) == len(read_raw_bars(on_cluster)) == len(bars) + len(fix) + 1
    qa, qb = read_quarantine(local), read_quarantine(on_cluster)
    assert list(qa["reason"]) == list(qb["reason"]) == ["unparsable_json"]


def test_streaming_job_on_a_standalone_cluster_equals_pandas(settings, cluster):
    s = cluster.settings.model_copy(update={"bucket": "scale-stream", "topic_ticks": "scale.ticks"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_ticks], partitions=3)
    run_producer(s, _spec("cluster-1"), rate=5000, max_ticks=1500)
    before = _executors_ran(cluster)
    _run(_stream_cmd("t_cluster"), s)
    assert _executors_ran(cluster) >= before + 2
    expected = _expected_windows(s)
    assert len(expected) >= 12  # 30 s of event time, 3 symbols
    assert compare_windows(read_tick_windows(s), expected) == []


# Three Kafka brokers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka3(tmp_path_factory):
    """Three KRaft broker+controller nodes (and a MinIO) on loopback ports."""
    s = isolated_settings(
        tmp_path_factory.mktemp("kafka3"), kafka_nodes=3, kafka_heap="384m", bucket="kafka3"
    )
    stack = Stack(s)
    stack.up(log=lambda _m: None)
    try:
        yield stack
    finally:
        stack.down(log=lambda _m: None)


def _partitions(s, topic: str) -> list[dict]:
    admin = admin_client(s)
    try:
        (meta,) = admin.describe_topics([topic])
        return meta["partitions"]
    finally:
        admin.close()


def _leader_of_partition_0(s, topic: str) -> int:
    return next(p["leader_id"] for p in _partitions(s, topic) if p["partition_index"] == 0)


def _kill_and_restart(stack: Stack, node_id: int, down_s: float) -> None:
    svc = stack.service(f"kafka-{node_id}")
    pid = svc.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    time.sleep(down_s)
    svc.start()
    svc.wait_healthy(90)


def test_topics_have_three_replicas_and_two_in_sync(kafka3):
    from kafka.admin import ConfigResource, ConfigResourceType

    s = kafka3.settings
    assert {len(p["replica_nodes"]) for p in _partitions(s, s.topic_bars)} == {3}
    admin = admin_client(s)
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.topic_bars)])
    finally:
        admin.close()
    (configs,) = [c for by_name in res.values() for c in by_name.values()]
    assert configs["min.insync.replicas"]["value"] == "2"


def test_producer_loses_nothing_and_doubles_nothing_when_a_broker_is_killed(kafka3):
    s = kafka3.settings
    bars = synthetic_bars(
        80, pd.Timestamp("2015-01-01"), pd.Timestamp("2024-08-01"), "1d", seed=9, batch_id="k"
    )
    bars = bars.iloc[:200_000]
    assert len(bars) == 200_000
    victim = _leader_of_partition_0(s, s.topic_bars)
    report: dict = {}
    sender = threading.Thread(
        target=lambda: report.update(r=produce_bars(s, bars, s.topic_bars, progress=False))
    )
    sender.start()
    # kill the leader of partition 0 once a fifth of the bars are in Kafka
    deadline = time.monotonic() + 60
    while sum(end_offsets(s, s.topic_bars).values()) < 40_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    in_kafka_at_kill = sum(end_offsets(s, s.topic_bars).values())
    _kill_and_restart(kafka3, victim, down_s=3)
    sender.join(300)
    assert not sender.is_alive()
    assert 0 < in_kafka_at_kill < len(bars), "the kill did not happen mid-send"
    r = report["r"]
    assert r.sent == len(bars) and r.failed == 0

    records = read_all(s, s.topic_bars)
    values = pd.DataFrame([json.loads(v) for _, _, _, v in records])
    assert len(values) == len(bars)  # nothing doubled by retries
    keys = set(zip(values["symbol"], pd.to_datetime(values["ts"], utc=True), strict=True))
    assert keys == set(zip(bars["symbol"], bars["ts"], strict=True))  # nothing lost
    assert _leader_of_partition_0(s, s.topic_bars) in {1, 2, 3}


def test_streaming_job_output_matches_pandas_when_a_broker_is_killed(kafka3, tmp_path):
    s = kafka3.settings.model_copy(update={"topic_ticks": "k3.ticks"})
    ensure_topics(s, [s.topic_ticks], partitions=3)
    name = "t_kafka3"
    run_producer(s, _spec("k3-1"), rate=5000, max_ticks=1500)
    # While a partition's leader moves, the job reads the three partitions unevenly;
    # a watermark wider than that skew (with event time at wall-clock pace) keeps
    # the late/not-late verdict the same as in the pandas reference.
    watermark = "20 seconds"
    cmd = _stream_cmd(name, "continuous", "--trigger", "1 second", watermark=watermark)
    # a file, not a pipe nobody reads while the job runs: a full pipe would block
    # the job on its own log lines (the broker's death makes many)
    log = tmp_path / "stream.log"
    child = subprocess.Popen(
        [*cmd, "--max-offsets-per-trigger", "300"],
        env=_env(s), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        victim = _leader_of_partition_0(s, s.topic_ticks)
        # the first ticks are all through the job before the second producer starts,
        # so the pandas reference knows which ticks are late
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            m = read_stream_metrics(s, name)
            if len(m) and m["num_input_rows"].sum() >= 1500:
                break
            time.sleep(1)
        # the broker dies while the job reads and while new ticks arrive
        fed: dict = {}
        spec2 = _spec("k3-2", seed=8, start_ms=BASE_MS + 30_000)
        feeder = threading.Thread(
            target=lambda: fed.update(r=run_producer(s, spec2, rate=50, max_ticks=1500))
        )
        feeder.start()
        _kill_and_restart(kafka3, victim, down_s=5)
        feeder.join(120)
        assert fed["r"].sent == 1500 and fed["r"].failed == 0
        assert child.poll() is None, log.read_text()[-3000:]
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            raise AssertionError(
                f"the job did not stop within 120 s of SIGTERM:\n{log.read_text()[-3000:]}"
            ) from None
    _run(_stream_cmd(name, watermark=watermark), s)  # what the continuous run had not reached
    expected = _expected_windows(s, {"k3-1": 0, "k3-2": 1}, watermark)
    assert len(expected) >= 12, expected[["symbol", "window_start"]]
    assert compare_windows(read_tick_windows(s), expected) == []
