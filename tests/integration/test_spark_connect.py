"""The stack's Spark Connect server: sessions of their own, a clear error when it is
down, and a batch job that survives the server dying under it, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from oracles.bars import assert_same_bars, expected_processed

from stockpipe.errors import StackError
from stockpipe.ingest import produce_bars
from stockpipe.kafka import ensure_topics
from stockpipe.reader import read_bars, read_raw_bars
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.spark.batch import run_batch_job
from stockpipe.spark.session import get_spark
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.stack.services import free_port
from stockpipe.stack.spark_connect import SparkConnect
from stockpipe.tables import row_count

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(settings):
    run = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"bucket": f"connect-{run}", "topic_bars": f"bars.{run}"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars], partitions=3)
    return s


def test_one_jobs_views_and_settings_never_reach_another(settings):
    first, second = get_spark(settings, "first"), get_spark(settings, "second")
    try:
        first.range(3).createOrReplaceTempView("only_mine")
        first.conf.set("spark.sql.shuffle.partitions", "7")
        assert first.sql("SELECT count(*) AS n FROM only_mine").collect()[0].n == 3
        assert "only_mine" not in [t.name for t in second.catalog.listTables()]
        assert second.conf.get("spark.sql.shuffle.partitions") != "7"
        with pytest.raises(Exception, match="only_mine"):
            second.sql("SELECT * FROM only_mine").collect()
    finally:
        first.stop()
        second.stop()
    # a third session after both stopped starts clean too
    third = get_spark(settings, "third")
    try:
        assert "only_mine" not in [t.name for t in third.catalog.listTables()]
    finally:
        third.stop()


def test_a_job_started_while_the_server_is_down_names_stockpipe_up(lake):
    down = lake.model_copy(update={"spark_connect_port": free_port()})
    bars = synthetic_bars(2, "2024-01-01", "2024-01-31", "1d", seed=5, batch_id="b")
    produce_bars(down, bars, progress=False)
    with pytest.raises(StackError, match="stockpipe up") as err:
        run_batch_job(down)
    assert f"sc://127.0.0.1:{down.spark_connect_port}" in str(err.value)
    assert row_count(down, "raw_bars") == 0  # nothing written before the error


def _job(settings) -> subprocess.Popen:
    # an env file of its own: the CLI writes generated keys into a missing one
    env_file = settings.state_dir / "job.env"
    env = {**os.environ, **settings.to_env(), "STOCKPIPE_ENV_FILE": str(env_file)}
    return subprocess.Popen(
        [sys.executable, "-m", "stockpipe.cli", "batch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_the_server_dying_mid_job_leaves_the_tables_whole_and_a_rerun_exactly_once(
    lake, own_state_root
):
    """A server of its own (the suite's stays up) is killed while a job runs in it:
    the job fails naming the server, every table is as a whole commit left it, and
    after `up` restarts the server a rerun finishes with every record once."""
    s = lake.model_copy(update={"state_dir": own_state_root, "spark_connect_port": free_port()})
    server = SparkConnect("spark-connect", s)
    server.start()
    try:
        server.wait_healthy(120)
        bars = synthetic_bars(20, "2015-01-01", "2024-12-31", "1d", seed=11, batch_id="b")
        assert produce_bars(s, bars, progress=False).sent == len(bars)
        job = _job(s)
        lines: list[str] = []
        assert job.stdout is not None
        for line in job.stdout:  # kill the server once the job works in it
            lines.append(line)
            if "records read and checked" in line:
                break
        os.killpg(server.pid(), signal.SIGKILL)
        out, _ = job.communicate(timeout=120)
        lines.append(out)
        assert job.returncode != 0, "".join(lines)[-2000:]
        assert "Spark" in out or "UNAVAILABLE" in out or "connect" in out.lower()
        # each table is whole: none or all of the slice, never part of it
        for table in ("raw_bars", "processed_bars"):
            assert row_count(s, table) in (0, len(bars)), table

        server.start()
        server.wait_healthy(120)
        spark = get_spark(s, "rerun")
        try:
            report = run_batch_job(s, spark=spark)
        finally:
            spark.stop()
        assert report.records_read in (0, len(bars))
        raw = read_raw_bars(s)
        assert len(raw) == len(bars)
        assert not raw.duplicated(["partition", "offset"]).any()
        assert_same_bars(read_bars(s, None), expected_processed(bars))
    finally:
        server.stop()


def test_up_restarts_a_dead_server(settings, own_state_root):
    from stockpipe.stack.manager import Stack

    s = settings.model_copy(update={"state_dir": own_state_root, "spark_connect_port": free_port()})
    server = SparkConnect("spark-connect", s)
    stack = Stack(s, [server])
    try:
        stack.up(log=lambda _m: None)
        first = server.pid()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [r.state for r in stack.status()] == ["stopped"]
        stack.up(log=lambda _m: None)
        assert server.pid() not in (None, first)
        spark = get_spark(s, "after-restart")
        try:
            assert spark.range(5).count() == 5
        finally:
            spark.stop()
    finally:
        stack.down(log=lambda _m: None)
