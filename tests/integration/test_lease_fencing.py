"""Fenced writers: a holder that could have lost its lease never commits.

On the real MinIO of the test stack, with faults injected into the renewals only:
a renewal that hangs, a contender whose clock runs ahead, a renewal that fails once,
and a batch job whose renewals hang while a second job takes its tables over.
"""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from botocore.exceptions import EndpointConnectionError
from oracles.bars import assert_same_bars, expected_processed

from stockpipe import lease as lease_module
from stockpipe.errors import LeaseHeldError, LeaseLostError
from stockpipe.lease import Lease, hold
from stockpipe.tables import open_table

pytestmark = pytest.mark.integration

TTL_S = 6.0


def _name() -> str:
    return f"test/fencing-{uuid.uuid4().hex[:8]}"


def _until(condition, timeout_s: float, what: str, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(every_s)


def _lost(lease: Lease) -> bool:
    try:
        lease.check()
    except LeaseLostError:
        return True
    return False


class HungRenewals:
    """Renewals of the leases in ``frozen`` hang until ``thaw`` (a stuck request);
    ``ok_sent`` is when the last renewal that succeeded was sent (monotonic)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.frozen: set[str] = set()
        self.thaw = threading.Event()
        self.ok_sent: dict[str, float] = {}
        real = Lease.renew

        def renew(lease: Lease) -> None:
            if lease.id in self.frozen:
                self.thaw.wait(300)
            sent = time.monotonic()
            real(lease)
            self.ok_sent[lease.id] = sent

        monkeypatch.setattr(Lease, "renew", renew)


class Takeover:
    """A stale job that stalls in one step, its renewals hung, until a second job has
    taken its tables over; then the step goes on (its commits are made or refused)."""

    def __init__(self, hung: HungRenewals) -> None:
        self.hung = hung
        self.stalled, self.taken_over = threading.Event(), threading.Event()
        self.outcome: dict[str, object] = {}

    def stall(self, leases, step) -> None:
        self.hung.frozen.update(lease.id for lease in leases)
        self.stalled.set()
        assert self.taken_over.wait(600)
        try:
            step()
        finally:
            self.hung.thaw.set()  # the renewals may go on

    def run(self, stale_job, second_job):
        """Run ``stale_job`` in a thread and ``second_job`` once it stalls; the second's result."""

        def run_stale() -> None:
            try:
                self.outcome["report"] = stale_job()
            except Exception as exc:
                self.outcome["error"] = exc

        thread = threading.Thread(target=run_stale, name="stale-job")
        thread.start()
        try:
            assert self.stalled.wait(600), self.outcome
            second = second_job()  # waits for the leases, then takes them
            self.taken_over.set()
            thread.join(600)
            assert not thread.is_alive()
        finally:
            self.taken_over.set()
            self.hung.thaw.set()
            thread.join(600)
        return second


def test_a_hung_renewal_stops_commits_before_the_ttl_and_a_contender_waits_it_out(
    settings, monkeypatch
):
    name, hung = _name(), HungRenewals(monkeypatch)
    contender = Lease(settings, name, job="contender", ttl_s=TTL_S)
    try:
        with hold(settings, [name], job="stalled holder", ttl_s=TTL_S) as (lease,):
            _until(lambda: lease.id in hung.ok_sent, 3 * TTL_S, "a first renewal")
            hung.frozen.add(lease.id)
            _until(lambda: _lost(lease), 3 * TTL_S, "check() to fail")
            # before the store could count the lease expired: its last write came after
            # that renewal was sent
            assert time.monotonic() < hung.ok_sent[lease.id] + TTL_S
            held = contender.try_acquire()
            assert held is not None and held.holder == lease.id  # still live by the store
            _until(lambda: contender.try_acquire() is None, 4 * TTL_S, "the takeover", 0.2)
            assert time.monotonic() > hung.ok_sent[lease.id] + TTL_S
            with pytest.raises(LeaseLostError):
                lease.check()
            hung.thaw.set()  # the stuck renewal ends: it must not take the lease back
        holder = contender.current_holder()
        assert holder is not None and holder.holder == contender.id and not holder.expired
    finally:
        hung.thaw.set()
        contender.release()


def test_a_contender_whose_clock_runs_90_s_ahead_does_not_take_a_live_lease(settings, monkeypatch):
    name = _name()
    contender = Lease(settings, name, job="contender", ttl_s=TTL_S)
    with hold(settings, [name], job="live holder", ttl_s=TTL_S) as (lease,):
        real_time = time.time
        ahead = SimpleNamespace(
            time=lambda: real_time() + 90, monotonic=time.monotonic, sleep=time.sleep
        )
        monkeypatch.setattr(lease_module, "time", ahead)
        held = contender.try_acquire()
        assert held is not None and held.holder == lease.id
        with pytest.raises(LeaseHeldError, match="live holder"):
            contender.acquire(wait_s=2 * TTL_S, poll_s=0.5)
        lease.check()
    # released: taken at once, whatever the clock
    assert contender.try_acquire() is None
    contender.release()


def test_a_renewal_that_fails_once_does_not_lose_the_lease(settings, monkeypatch):
    name = _name()
    with hold(settings, [name], job="holder", ttl_s=TTL_S) as (lease,):
        s3, real_put = lease._s3, lease._s3.put_object
        renewals: list[str] = []

        def put_object(**kw):  # MinIO restarting: one renewal cannot connect
            if kw.get("Key") != lease.key or "IfMatch" not in kw:
                return real_put(**kw)
            if not renewals:
                renewals.append("failed")
                raise EndpointConnectionError(endpoint_url=settings.s3_url)
            answer = real_put(**kw)
            renewals.append("ok")
            return answer

        monkeypatch.setattr(s3, "put_object", put_object)
        deadline = time.monotonic() + 6 * TTL_S
        while renewals.count("ok") < 2:
            lease.check()  # never fails meanwhile
            assert time.monotonic() < deadline, renewals
            time.sleep(0.05)
        assert renewals[0] == "failed"
        holder = lease.current_holder()
        assert holder is not None and holder.holder == lease.id


@pytest.fixture
def lake(settings):
    """A fresh bucket and topic; leases short enough to see a takeover."""
    from stockpipe.kafka import ensure_topics
    from stockpipe.stack.minio_access import provision_bucket

    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "bucket": f"fence-{run}",
            "topic_bars": f"fence.{run}",
            "lease_ttl_s": TTL_S,
            "lease_wait_s": 120.0,
        }
    )
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars], partitions=3)
    return s


def test_a_batch_job_whose_renewals_hang_never_commits_after_a_takeover(lake, spark, monkeypatch):
    from stockpipe.ingest import ingest
    from stockpipe.reader import read_bars, read_raw_bars
    from stockpipe.schemas import BAR_KEY
    from stockpipe.sources import fetch_many, get_source
    from stockpipe.spark.batch import BarsBatchJob, pending_records, run_batch_job

    window = {"start": "2016-01-01", "end": "2016-12-31"}
    r = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window)
    sent = fetch_many(get_source("samples"), "MSFT,GOOG", batch_id="f", progress=False, **window)
    takeover = Takeover(HungRenewals(monkeypatch))
    stale = BarsBatchJob(lake, spark)
    slices: list[int] = []
    process = BarsBatchJob.process_batch

    def slow_process(job, batch, part):
        # the stale job's second slice stalls (its reads and commits still work)
        if job is stale:
            slices.append(part.number)
        if job is not stale or len(slices) != 2:
            return process(job, batch, part)
        takeover.stall(job.leases, lambda: process(job, batch, part))

    monkeypatch.setattr(BarsBatchJob, "process_batch", slow_process)
    second = takeover.run(
        lambda: stale.run(max_offsets_per_trigger=r.sent // 2),
        lambda: run_batch_job(lake, spark=spark),
    )
    assert second.records_read > 0
    raw = read_raw_bars(lake)
    assert not raw.duplicated(["partition", "offset"]).any()
    assert len(raw) == r.sent
    processed = read_bars(lake, None)
    assert not processed.duplicated(list(BAR_KEY)).any()
    assert isinstance(takeover.outcome.get("error"), LeaseLostError), takeover.outcome
    assert_same_bars(processed, expected_processed(sent.bars))
    assert pending_records(lake) == 0


def test_a_streaming_job_whose_renewals_hang_never_commits_after_a_takeover(
    settings, stream_spark, monkeypatch
):
    from oracles.tick_windows import compare_windows, parse_tick_values, reference_windows

    from stockpipe.kafka import ensure_topics, read_all
    from stockpipe.reader import read_raw_ticks, read_tick_windows
    from stockpipe.spark.stream_commits import ArchiveSink
    from stockpipe.spark.streaming import StreamOptions, run_stream
    from stockpipe.stack.minio_access import provision_bucket
    from stockpipe.ticks import TickSpec, run_producer

    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={"bucket": f"fence-{run}", "topic_ticks": f"fence.ticks.{run}", "lease_ttl_s": TTL_S}
    )
    provision_bucket(s)
    ensure_topics(s, [s.topic_ticks], partitions=3)
    start_ms = 1_704_205_800_000  # 2024-01-02 14:30 UTC
    spec = TickSpec(symbols=("AAPL", "MSFT"), seed=1, rate=100, start_ms=start_ms, step_ms=20)
    sent = run_producer(s, spec, rate=5000, max_ticks=1500).sent
    common = dict(
        window="10 seconds", slide="5 seconds", watermark="5 seconds", mode="available-now",
        duration_s=300, state_partitions=2, max_offsets_per_trigger=300, lease_wait_s=120,
    )  # fmt: skip
    takeover = Takeover(HungRenewals(monkeypatch))
    stale: list[ArchiveSink] = []
    calls: list[int] = []
    real = ArchiveSink.__call__

    def archive(sink, records, batch_id):
        # the first job's second micro-batch stalls
        if not stale:
            stale.append(sink)
        if sink is not stale[0]:
            return real(sink, records, batch_id)
        calls.append(batch_id)
        if len(calls) != 2:
            return real(sink, records, batch_id)
        takeover.stall(sink.leases, lambda: real(sink, records, batch_id))

    monkeypatch.setattr(ArchiveSink, "__call__", archive)
    second = takeover.run(
        lambda: run_stream(s, StreamOptions(name="t_stale", **common), spark=stream_spark),
        lambda: run_stream(s, StreamOptions(name="t_takeover", **common), spark=stream_spark),
    )
    assert second.stopped_by == "backlog done"
    assert isinstance(takeover.outcome.get("error"), LeaseLostError), takeover.outcome
    raw = read_raw_ticks(s)
    assert len(raw) == sent and not raw.duplicated(["partition", "offset"]).any()
    ticks = parse_tick_values([v for *_, v in read_all(s, s.topic_ticks)])
    expected = reference_windows(
        ticks, window="10 seconds", slide="5 seconds", watermark="5 seconds", order=["seq"]
    )
    assert len(expected) > 0
    assert compare_windows(read_tick_windows(s), expected) == []


def test_a_stale_writer_past_its_lease_check_is_refused_by_the_tables(lake, spark, monkeypatch):
    """The gap leases leave (a pause between the check and the commit) is closed by
    Delta's idempotent writes: the commit's offsets were committed already."""
    from stockpipe.ingest import ingest
    from stockpipe.kafka import ConfirmedProducer
    from stockpipe.offsets import topic_state
    from stockpipe.reader import read_bars, read_quarantine, read_raw_bars
    from stockpipe.schemas import BAR_KEY
    from stockpipe.sources import fetch_many, get_source
    from stockpipe.spark import batch as batch_module
    from stockpipe.spark.batch import START_TABLES, TABLES, BarsBatchJob, Slice, run_batch_job

    window = {"start": "2017-01-01", "end": "2017-06-30"}
    r = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window)
    with ConfirmedProducer(lake, lake.topic_bars) as producer:
        producer.send(b"MSFT", b"not json")
    sent = fetch_many(get_source("samples"), "MSFT,GOOG", batch_id="f", progress=False, **window)
    stale = BarsBatchJob(lake, spark)
    stale.state = topic_state(lake, lake.topic_bars, TABLES)  # what it saw before it stalled
    run_batch_job(lake, spark=spark)  # meanwhile another job took over and committed it all
    versions = {t: open_table(lake, t).version() for t in TABLES}

    monkeypatch.setattr(batch_module, "check_all", lambda leases: None)  # past its checks
    part = Slice(0, lake.topic_bars, stale.state.start(START_TABLES), stale.state.end)
    stale.process_batch(stale.io.read(lake.topic_bars, part.start, part.end), part)

    assert {t: open_table(lake, t).version() for t in TABLES} == versions  # no commit made
    raw = read_raw_bars(lake)
    assert len(raw) == r.sent + 1 and not raw.duplicated(["partition", "offset"]).any()
    assert len(read_quarantine(lake)) == 1
    processed = read_bars(lake, None)
    assert not processed.duplicated(list(BAR_KEY)).any()
    assert_same_bars(processed, expected_processed(sent.bars))

    # a MERGE (corrections) is refused the same way: Delta's SQL settings for it
    from pyspark.sql import functions as F

    from stockpipe.schemas import PROCESSED_COLUMNS
    from stockpipe.spark import transforms as T
    from stockpipe.spark.batch import PARTITIONS
    from stockpipe.spark.batch_io import Upsert
    from stockpipe.tables import kafka_progress

    held = kafka_progress(lake, "processed_bars")[lake.topic_bars]
    table = spark.read.format("delta").load(stale.io.path("processed_bars"))
    fix = table.limit(1).withColumn("close", F.col("close") + 1.0)
    changes = fix.withColumn(T.UPDATE_FLAG, F.lit(True))
    year = fix.first()["year"]
    how = Upsert((*BAR_KEY, "year"), {"1d": year}, PROCESSED_COLUMNS, PARTITIONS["processed_bars"])
    before = open_table(lake, "processed_bars").version()
    app, version = held.transaction(lake.topic_bars)
    assert stale.io.upsert("processed_bars", changes, how, "{}", (app, version)).version == before
    assert open_table(lake, "processed_bars").version() == before
    commit = stale.io.upsert("processed_bars", changes, how, "{}", (app, version + 1))
    assert commit.version == before + 1 and commit.updated == 1


def test_a_batch_job_frozen_whole_past_its_ttl_doubles_nothing(lake, spark, tmp_path):
    """SIGSTOP stops the whole job (its renewals too) while its Spark work may still run
    on the server; after a takeover, SIGCONT: it stops with the lease lost."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from stockpipe.ingest import ingest
    from stockpipe.reader import read_bars, read_raw_bars
    from stockpipe.schemas import BAR_KEY
    from stockpipe.sources import fetch_many, get_source
    from stockpipe.spark.batch import pending_records, run_batch_job

    window = {"start": "2015-01-01", "end": "2015-12-31"}
    r = ingest(lake, "samples", "MSFT,GOOG", progress=False, **window)
    assert r.sent > 200  # four slices of fifty or more
    sent = fetch_many(get_source("samples"), "MSFT,GOOG", batch_id="f", progress=False, **window)
    env = {**os.environ, **lake.to_env(), "STOCKPIPE_ENV_FILE": str(tmp_path / "job.env")}
    log = tmp_path / "frozen.log"
    cmd = [sys.executable, "-m", "stockpipe.cli", "batch"]
    frozen = subprocess.Popen(
        [*cmd, "--max-offsets-per-trigger", str(r.sent // 4)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:

        def first_slice_done() -> bool:
            assert frozen.poll() is None, log.read_text()[-3000:]
            return re.search(r"batch 0: \d+ records in", log.read_text()) is not None

        _until(first_slice_done, 300, "its first slice", every_s=0.2)
        os.killpg(frozen.pid, signal.SIGSTOP)
        second = run_batch_job(lake, spark=spark)  # waits out the frozen job's leases
        assert second.records_read > 0
        os.killpg(frozen.pid, signal.SIGCONT)
        assert frozen.wait(300) != 0, log.read_text()[-3000:]
    finally:
        if frozen.poll() is None:
            os.killpg(frozen.pid, signal.SIGCONT)
            os.killpg(frozen.pid, signal.SIGKILL)
        frozen.wait(60)
    out = log.read_text()
    assert "was last renewed" in out or "is not held" in out or "taken over" in out, out[-3000:]
    raw = read_raw_bars(lake)
    assert len(raw) == r.sent and not raw.duplicated(["partition", "offset"]).any()
    processed = read_bars(lake, None)
    assert not processed.duplicated(list(BAR_KEY)).any()
    assert_same_bars(processed, expected_processed(sent.bars))
    assert pending_records(lake) == 0
