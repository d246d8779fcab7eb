"""Topics that exist: producers and the streaming job create a missing one, or fail fast.

Kafka here runs with ``auto.create.topics.enable=false``, as clusters usually do.
"""

from __future__ import annotations

import re
import time
import uuid

import pandas as pd
import pytest
from kafka import KafkaConsumer

from stockpipe.errors import StackError
from stockpipe.ingest import produce_bars
from stockpipe.kafka import ConfirmedProducer, end_offsets, topic_id
from stockpipe.orchestration import stack_ready
from stockpipe.sources import fetch_many, get_source
from stockpipe.spark.streaming import StreamOptions, run_stream
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.ticks import TickSpec, run_producer

pytestmark = pytest.mark.integration


def _partitions(settings, topic: str) -> set[int] | None:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        return consumer.partitions_for_topic(topic) or None  # set() when missing
    finally:
        consumer.close()


def _missing(settings, **update):
    name = f"missing.{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"topic_bars": name, "topic_ticks": name, **update})
    assert _partitions(s, name) is None
    return s, name


def test_the_bar_producer_creates_a_missing_topic_as_configured(settings):
    s, topic = _missing(settings, topic_partitions=2)
    bars = fetch_many(get_source("samples"), "MSFT", end="2012-03-01", batch_id="t", progress=False)
    t0 = time.monotonic()
    report = produce_bars(s, bars.bars, progress=False)
    assert time.monotonic() - t0 < 20  # not a metadata timeout per record
    assert report.failed == 0 and report.sent == len(bars.bars) > 30
    assert _partitions(s, topic) == {0, 1}
    assert sum(end_offsets(s, topic).values()) == report.sent


def test_the_tick_producer_creates_a_missing_topic(settings):
    s, topic = _missing(settings)
    spec = TickSpec(symbols=("AAPL",), start_ms=1_700_000_000_000, producer_id="topics")
    report = run_producer(s, spec, max_ticks=50)
    assert report.sent == 50
    assert _partitions(s, topic) == set(range(s.topic_partitions))


def test_with_creation_off_a_producer_fails_fast_naming_the_command(settings):
    s, topic = _missing(settings, create_topics=False, topic_partitions=4)
    t0 = time.monotonic()
    with pytest.raises(StackError) as info:
        ConfirmedProducer(s, topic)
    assert time.monotonic() - t0 < 5
    text = str(info.value)
    assert f"topic {topic!r} does not exist" in text
    assert (
        f"kafka-topics.sh --bootstrap-server {s.bootstrap_servers} --create --topic {topic} "
        "--partitions 4 --replication-factor 1"
    ) in text
    assert _partitions(s, topic) is None  # nothing made behind the user's back
    with pytest.raises(StackError, match="STOCKPIPE_CREATE_TOPICS=false"):
        produce_bars(s, pd.DataFrame(), progress=False)


def test_the_streaming_job_input_fails_fast_or_is_created_by_the_dag_check(settings):
    s, topic = _missing(settings, create_topics=False)
    opts = StreamOptions(mode="available-now", name="t_topics", duration_s=60)
    t0 = time.monotonic()
    with pytest.raises(StackError, match=re.escape(f"topic {topic!r} does not exist")):
        run_stream(s, opts)  # fails before a Spark session or a lease is taken
    assert time.monotonic() - t0 < 5
    provision_bucket(s)
    with pytest.raises(StackError, match=r"kafka-topics\.sh"):
        stack_ready(s, [topic])
    # with creation on, the DAG's stack check makes the topic the job then reads
    on = s.model_copy(update={"create_topics": True})
    assert stack_ready(on, [topic])["records_per_topic"] == {topic: 0}
    assert topic_id(on, topic)
