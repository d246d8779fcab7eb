"""The performance knobs follow the settings' cores and memory (no services)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from stockpipe.config import Settings
from stockpipe.errors import ParameterError
from stockpipe.spark import batch, streaming
from stockpipe.spark.session import spark_conf
from stockpipe.spark.tuning import Tuning, memory_mb, task_slots

MIB = 1 << 20


def settings(**kw: object) -> Settings:
    base = {"spark_cores": 0, "spark_shuffle_partitions": 0, "spark_cluster": False}
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "slots"),
    [
        ({"spark_master": "local[3]"}, 3),
        ({"spark_master": "local[4,2]"}, 4),  # local[N, retries]
        ({"spark_master": "local[*]"}, os.cpu_count()),
        ({"spark_master": "local"}, os.cpu_count()),
        ({"spark_cluster": True, "spark_workers": 3, "spark_worker_cores": 2}, 6),
        ({"spark_master": "local[3]", "spark_cores": 5}, 5),  # the setting wins
    ],
)
def test_task_slots_come_from_the_setting_the_master_or_the_machine(kw, slots):
    assert task_slots(settings(**kw)) == slots


def test_memory_sizes_read_as_the_jvm_writes_them():
    assert [memory_mb(t) for t in ("2g", "768m", "768M", "1024k", "3gb")] == [
        2048,
        768,
        768,
        1,
        3072,
    ]
    with pytest.raises(ParameterError, match="'2 gigs' is not a memory size"):
        memory_mb("2 gigs")


def test_shuffle_partitions_are_two_per_slot_unless_set():
    assert Tuning.of(settings(spark_master="local[3]")).shuffle_partitions == 6
    assert Tuning.of(settings(spark_master="local[3]", spark_shuffle_partitions=5)) == Tuning.of(
        settings(spark_master="local[3]", spark_shuffle_partitions=5)
    )
    conf = spark_conf(settings(spark_master="local[3]", spark_shuffle_partitions=5))
    assert conf["spark.sql.shuffle.partitions"] == "5"
    assert conf["spark.databricks.delta.snapshotPartitions"] == "5"


def _pools(path) -> dict[str, dict[str, str]]:
    root = ET.parse(path).getroot()
    return {p.get("name"): {c.tag: c.text for c in p} for p in root.iter("pool")}


def test_the_first_pools_are_guaranteed_every_core_and_the_jobs_name_only_known_pools():
    for cores in (1, 2, 8):
        tuning = Tuning.of(settings(spark_cores=cores))
        pools = _pools(spark_conf(settings(spark_cores=cores))["spark.scheduler.allocation.file"])
        assert pools == _pools(tuning.pools_file())
        assert pools["stream_windows"]["minShare"] == pools["batch_main"]["minShare"] == str(cores)
        assert pools["stream_archive"]["minShare"] == pools["batch_raw"]["minShare"] == "0"
        assert int(pools["stream_windows"]["weight"]) > int(pools["stream_archive"]["weight"])
        # the raw and quarantine queries share the archive pool fairly
        assert pools["stream_archive"]["schedulingMode"] == "FAIR"
        assert pools["batch_main"]["schedulingMode"] == "FIFO"
    used = {*streaming.POOLS.values(), batch.MAIN_POOL, batch.RAW_POOL}
    assert used == set(pools)


def test_kafka_fetch_buffers_are_a_sixteenth_of_task_memory_within_bounds():
    def fetch(**kw: object) -> tuple[int, int]:
        opts = Tuning.of(settings(**kw)).kafka_fetch()
        return int(opts["kafka.fetch.max.bytes"]), int(opts["kafka.max.partition.fetch.bytes"])

    # local mode: tasks run in the driver
    assert fetch(spark_master="local[2]", spark_driver_memory="2g") == (64 * MIB, 32 * MIB)
    # a cluster: tasks run in executors
    cluster = {"spark_master": "spark://h:7077", "spark_driver_memory": "8g"}
    assert fetch(**cluster, spark_executor_memory="256m") == (16 * MIB, 8 * MIB)
    assert fetch(**cluster, spark_executor_memory="64m") == (8 * MIB, 4 * MIB)


def test_a_small_read_keeps_one_task_per_partition_a_backlog_gets_more():
    tuning = Tuning.of(settings(spark_cores=2))
    assert tuning.read_tasks(500, 3) is None
    assert tuning.read_tasks(1_300_000, 3) == 6
    assert Tuning.of(settings(spark_cores=4)).read_tasks(1_300_000, 3) == 12
