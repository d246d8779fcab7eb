"""Live ticks from Yahoo's streamer protocol through Kafka and the streaming job, for real.

The only stand-in is the streamer: a local websocket server replaying the recorded
session (data_samples/recorded/yahoo_streamer/), with malformed frames, a dropped
connection, a duplicate and late messages. Kafka, Spark and MinIO are real. The
ticks in Kafka are compared with what the session's lines say they hold (written
by the generator that made the trades), the windows with the pandas reference.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from oracles.tick_windows import compare_windows, late_pairs, parse_tick_values, reference_windows

from stockpipe.kafka import end_offsets, read_all
from stockpipe.live import FeedOptions, get_feed, run_feed
from stockpipe.reader import read_quarantined_ticks, read_raw_ticks, read_tick_windows
from stockpipe.sources.streamer_replay import ReplayServer, read_session
from stockpipe.spark.streaming import StreamOptions, run_stream
from stockpipe.stack.minio_access import provision_bucket

pytestmark = pytest.mark.integration

SESSION = "data_samples/recorded/yahoo_streamer/session.jsonl"
WINDOW, SLIDE, WATERMARK = "10 seconds", "5 seconds", "5 seconds"
#: No idle reconnect while the test holds the replay at the drop (the job runs then).
FEED = FeedOptions(heartbeat_s=1.0, idle_timeout_s=600, backoff_initial_s=0.1, poll_s=0.2)


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_yahoo_session_through_kafka_and_the_streaming_job_equals_pandas(
    settings, spark, stream_spark
):
    s = settings.model_copy(update={"bucket": "test-live", "topic_ticks": "test.live.ticks"})
    provision_bucket(s)  # the topic is not made here: the producer creates it
    session = read_session(SESSION)
    drop = next(i for i, line in enumerate(session) if line.get("drop"))
    before = [line["expect"] for line in session[:drop] if "expect" in line]
    expected = [line["expect"] for line in session if "expect" in line]
    records_before = sum("tick" in e or "rejected" in e for e in before)

    resume, stop = threading.Event(), threading.Event()
    opts = StreamOptions(
        window=WINDOW, slide=SLIDE, watermark=WATERMARK, mode="available-now",
        name="t_live", duration_s=300, state_partitions=2,
    )  # fmt: skip
    with ReplayServer(session, speed=40, resume=resume) as server:
        live = s.model_copy(update={"yahoo_stream_url": server.url})
        feed = get_feed("yahoo", live, symbols=["MSFT", "GOOG"], options=FEED)
        reports = []
        producer = threading.Thread(
            target=lambda: reports.append(run_feed(live, feed, stop=stop, duration_s=600))
        )
        producer.start()
        try:
            # Phase 1: the session up to the drop is in Kafka; the job takes it in.
            assert server.dropped.wait(120), "the replay never reached the drop"
            _wait(lambda: _records(s) == records_before, 60, "phase 1 in Kafka")
            run1 = run_stream(s, opts, spark=stream_spark)
            # Phase 2: the feed has reconnected; the rest of the session, the job again.
            resume.set()
            assert server.done.wait(120), "the replay did not finish"
            time.sleep(1.0)
        finally:
            resume.set()
            stop.set()
            producer.join(60)
    run2 = run_stream(s, opts, spark=stream_spark)
    [report] = reports

    # Every trade once, as the session holds it; what is no trade not sent.
    ticks_expected = sorted(
        (e["tick"]["symbol"], e["tick"]["ts"], e["tick"]["price"], e["tick"]["size"])
        for e in expected
        if "tick" in e
    )
    values = [v for _, _, _, v in read_all(s, s.topic_ticks)]
    ticks = parse_tick_values(values)
    assert sorted(ticks[["symbol", "ts", "price", "size"]].itertuples(index=False, name=None)) == (
        ticks_expected
    )
    assert len(values) == len(ticks) + 3  # and the three frames that are no PricingData
    assert sorted(ticks["seq"]) == sorted(set(ticks["seq"])) and ticks["seq"].max() < len(values)
    assert report.ticks == len(ticks_expected) and report.sent == len(values)
    assert report.stats.connections == 2 and report.stats.drops == 1
    assert report.stats.skipped["duplicate message"] == 1
    assert [sorted(subs[0]) for subs in server.subscriptions] == [["GOOG", "MSFT"]] * 2
    with_quotes = [json.loads(v) for v in values if b'"bid"' in v]
    assert with_quotes and all(q["ask"] > q["bid"] for q in with_quotes)

    # The windows are the pandas reference's over the ticks in arrival (seq) order.
    reference = reference_windows(ticks, window=WINDOW, slide=SLIDE, watermark=WATERMARK)
    assert len(reference) > 60
    assert compare_windows(read_tick_windows(s), reference) == []
    late = late_pairs(ticks, window=WINDOW, slide=SLIDE, watermark=WATERMARK)
    assert run1.late_rows_dropped == 0
    assert run2.late_rows_dropped == len(late.drop_duplicates(["symbol", "window_start_ms"])) > 0

    # Raw holds every record; the undecodable frames are quarantined with their reason.
    assert len(read_raw_ticks(s)) == len(values)
    quarantined = read_quarantined_ticks(s)
    assert list(quarantined["reason"]) == ["feed_error"] * 3
    frames = {json.loads(v)["frame"] for v in quarantined["value"]}
    assert frames == {line["frame"] for line in session if "rejected" in line.get("expect", {})}


def _records(s) -> int:
    try:
        return sum(end_offsets(s, s.topic_ticks).values())
    except Exception:  # the topic is not there yet
        return -1
