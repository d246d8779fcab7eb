"""The batch job's offset log (which Kafka ranges a run reads, on an in-memory
filesystem), and its session settings and scheduler pools."""

from __future__ import annotations

import hashlib
import json
import uuid
from xml.etree import ElementTree

import fsspec
import pytest

from stockpipe.config import load_settings
from stockpipe.spark.batch import BatchPlan, OffsetLog, plan_batches

TOPIC = "stock.bars"


@pytest.fixture
def offsets() -> OffsetLog:
    fs = fsspec.filesystem("memory")
    log = OffsetLog(load_settings(), TOPIC, fs=fs)
    log.root = f"/{uuid.uuid4().hex}/checkpoints/spark_batch/{TOPIC}"  # one log per test
    return log


def covered(plans: list[BatchPlan]) -> dict[int, list[int]]:
    """Every offset each plan reads, per partition, in the order read."""
    out: dict[int, list[int]] = {}
    for plan in plans:
        for p, end in plan.end.items():
            out.setdefault(p, []).extend(range(plan.start[p], end))
    return out


def test_a_first_run_reads_everything_kept_in_one_logged_batch(offsets):
    plans = list(plan_batches(offsets, set(), {0: 0, 1: 5, 2: 0}, {0: 10, 1: 12, 2: 0}))
    assert [(p.start, p.end) for p in plans] == [({0: 0, 1: 5, 2: 0}, {0: 10, 1: 12, 2: 0})]
    assert plans[0].records == 17
    assert offsets.latest() == plans[0]  # logged before it was handed out


def test_the_key_names_the_offset_range(offsets):
    plan = BatchPlan(3, TOPIC, {0: 0, 1: 5, 2: 7}, {0: 10, 1: 12, 2: 7})
    text = f"{TOPIC}:0:0-9;{TOPIC}:1:5-11"  # partition 2 reads nothing
    assert plan.key == hashlib.sha1(text.encode()).hexdigest()[:16]
    assert BatchPlan(9, TOPIC, dict(plan.start), dict(plan.end)).key == plan.key
    assert BatchPlan(3, TOPIC, plan.start, {**plan.end, 1: 13}).key != plan.key
    assert BatchPlan.from_json(plan.to_json()) == plan


def test_a_limit_splits_the_backlog_without_gaps_or_overlaps(offsets):
    first, end = {0: 0, 1: 100, 2: 0}, {0: 1000, 1: 400, 2: 7}
    plans = list(plan_batches(offsets, set(), first, end, limit=250))
    assert covered(plans) == {p: list(range(first[p], end[p])) for p in end}
    assert all(p.records <= 250 + len(end) for p in plans)
    assert len(plans) >= (1000 + 300 + 7) // 250
    assert [p.number for p in plans] == list(range(len(plans)))


def test_an_applied_batch_is_not_read_again(offsets):
    (plan,) = plan_batches(offsets, set(), {0: 0}, {0: 10})
    assert list(plan_batches(offsets, {plan.key}, {0: 0}, {0: 10})) == []
    assert offsets.committed({plan.key}) == {0: 10}
    (new,) = plan_batches(offsets, {plan.key}, {0: 0}, {0: 15})
    assert (new.number, new.start, new.end) == (1, {0: 10}, {0: 15})


def test_a_batch_never_applied_is_read_again_first_and_unchanged(offsets):
    (failed,) = plan_batches(offsets, set(), {0: 0, 1: 0}, {0: 10, 1: 4})
    assert offsets.committed(set()) == {0: 0, 1: 0}
    # more arrived meanwhile: the failed range is read as it was, then the rest
    again, new = plan_batches(offsets, set(), {0: 0, 1: 0}, {0: 12, 1: 9})
    assert again == failed
    assert (new.start, new.end) == ({0: 10, 1: 4}, {0: 12, 1: 9})


def test_records_deleted_before_they_were_read_are_an_error(offsets):
    (plan,) = plan_batches(offsets, set(), {0: 0}, {0: 10})
    with pytest.raises(RuntimeError, match=r"deleted by Kafka's retention.*\{0: \(10, 25\)\}"):
        list(plan_batches(offsets, {plan.key}, {0: 25}, {0: 40}))


def test_a_new_partition_is_read_from_its_first_offset(offsets):
    (plan,) = plan_batches(offsets, set(), {0: 0}, {0: 10})
    (new,) = plan_batches(offsets, {plan.key}, {0: 0, 1: 3}, {0: 10, 1: 8})
    assert (new.start, new.end) == ({0: 10, 1: 3}, {0: 10, 1: 8})


def test_a_lake_of_the_structured_streaming_job_goes_on_where_it_stopped(offsets):
    fs, root = offsets.fs, offsets.root
    meta = json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": 0})
    for n, ends in enumerate([{"0": 4, "1": 2}, {"0": 9, "1": 6}]):
        fs.pipe(f"{root}/offsets/{n}", f"v1\n{meta}\n{json.dumps({TOPIC: ends})}".encode())
    fs.pipe(f"{root}/commits/0", b"v1\n{}")  # batch 1 was never committed
    assert offsets.committed(set()) == {0: 4, 1: 2}
    (plan,) = plan_batches(offsets, set(), {0: 0, 1: 0}, {0: 12, 1: 6})
    assert (plan.start, plan.end) == ({0: 4, 1: 2}, {0: 12, 1: 6})


def test_job_settings_are_undone_after_the_run(spark):
    from stockpipe.spark.batch import JOB_CONF, _session_conf

    key = "spark.sql.adaptive.coalescePartitions.enabled"
    spark.conf.set(key, "true")
    spark.conf.unset("spark.sql.inMemoryColumnarStorage.compressed")
    default = spark.conf.get("spark.sql.inMemoryColumnarStorage.compressed")
    with pytest.raises(RuntimeError, match="midway"), _session_conf(spark, JOB_CONF):
        assert {k: spark.conf.get(k) for k in JOB_CONF} == JOB_CONF
        raise RuntimeError("midway")
    assert spark.conf.get(key) == "true"
    assert spark.conf.get("spark.sql.inMemoryColumnarStorage.compressed") == default


def test_check_and_merge_take_free_cores_before_the_raw_zone(spark):
    """Spark makes a pool the file lacks silently, with no priority: both are in it."""
    from stockpipe.spark.batch import MAIN_POOL, RAW_POOL
    from stockpipe.spark.session import SCHEDULER_POOLS, scheduler_pool

    pools = {p.get("name"): p for p in ElementTree.parse(SCHEDULER_POOLS).getroot().iter("pool")}
    main, raw = pools[MAIN_POOL], pools[RAW_POOL]
    assert int(main.findtext("minShare")) >= 2 and int(raw.findtext("minShare")) == 0
    assert int(main.findtext("weight")) > int(raw.findtext("weight"))

    sc = spark.sparkContext
    sc.setLocalProperty("spark.scheduler.pool", "notebook")
    with pytest.raises(RuntimeError, match="midway"), scheduler_pool(spark, MAIN_POOL):
        assert sc.getLocalProperty("spark.scheduler.pool") == MAIN_POOL
        raise RuntimeError("midway")
    assert sc.getLocalProperty("spark.scheduler.pool") == "notebook"
    sc.setLocalProperty("spark.scheduler.pool", None)


def test_on_spark_connect_the_server_schedules(spark):
    """A Connect session has no SparkContext: the pool and the number of Kafka read
    tasks are left to the server, no error."""
    from stockpipe.spark.session import default_parallelism, scheduler_pool

    class ConnectSession:  # what type(spark) is under Spark Connect, minus the network
        __module__ = "pyspark.sql.connect.session"

        @property
        def sparkContext(self):
            raise AssertionError("a Connect session has no SparkContext")

    with scheduler_pool(ConnectSession(), "batch_main"):  # type: ignore[arg-type]
        pass
    assert default_parallelism(ConnectSession()) is None  # type: ignore[arg-type]
    assert default_parallelism(spark) == 2  # the unit session's local[2]


def test_a_big_batch_is_read_in_three_tasks_a_core_a_small_one_in_one_per_partition():
    from stockpipe.spark.batch import read_tasks

    assert read_tasks(1_304_500, partitions=3, cores=2) == 6
    assert read_tasks(1_304_500, partitions=12, cores=2) is None  # one a partition is more
    assert read_tasks(200_000, partitions=1, cores=8) == 4  # at least 50,000 records a task
    assert read_tasks(500, partitions=3, cores=2) is None
