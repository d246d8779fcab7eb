"""Both streaming notebooks run under Papermill, bounded, against the test stack.

Settings reach the kernel only through the environment (the ``stack`` fixture
exports them; this test points the bucket and topic at its own).
"""

from __future__ import annotations

import json

import pandas as pd
import papermill as pm
import pytest
from oracles.tick_windows import compare_windows, parse_tick_values, reference_windows

from stockpipe.config import PROJECT_ROOT
from stockpipe.kafka import ensure_topics, read_all
from stockpipe.reader import read_stream_metrics, read_tick_windows
from stockpipe.stack.minio_access import provision_bucket

pytestmark = pytest.mark.integration

NOTEBOOKS = PROJECT_ROOT / "notebooks"
BASE = int(pd.Timestamp("2024-01-02 14:30", tz="UTC").value // 1_000_000)


def _outputs(path) -> str:
    nb = json.loads(path.read_text())
    text = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text.append("".join(out.get("text", "")))
            text.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_producer_then_streaming_notebook_bounded(settings, monkeypatch, tmp_path):
    s = settings.model_copy(update={"bucket": "test-notebooks", "topic_ticks": "test.notebooks"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_ticks], partitions=3)
    monkeypatch.setenv("STOCKPIPE_BUCKET", s.bucket)
    monkeypatch.setenv("STOCKPIPE_TOPIC_TICKS", s.topic_ticks)

    produced = tmp_path / "stream_producer.ipynb"
    pm.execute_notebook(
        NOTEBOOKS / "stream_producer.ipynb",
        produced,
        parameters=dict(
            symbols="AAPL,MSFT",
            rate=400,
            duration_s=4,
            seed=3,
            out_of_order_fraction=0.1,
            out_of_order_max_ms=3000,
            late_fraction=0.0,
            start_ms=BASE,  # virtual clock: 50 ticks per event-time second
            step_ms=20.0,
        ),
        kernel_name="stockpipe",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    ticks = parse_tick_values([v for *_, v in read_all(s, s.topic_ticks)])
    assert len(ticks) == pytest.approx(1600, rel=0.05)
    assert "ticks confirmed" in _outputs(produced)

    streamed = tmp_path / "spark_streaming.ipynb"
    pm.execute_notebook(
        NOTEBOOKS / "spark_streaming.ipynb",
        streamed,
        parameters=dict(
            window="10 seconds",
            slide="5 seconds",
            watermark="5 seconds",
            run_mode="available-now",
            duration_s=300,
            name="nb_windows",
            state_partitions=2,
            latest_windows=3,
        ),
        kernel_name="stockpipe",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    shown = _outputs(streamed)
    assert "nb_windows" in shown and "backlog done" in shown
    expected = reference_windows(ticks, window="10 s", slide="5 s", watermark="5 s")
    assert compare_windows(read_tick_windows(s), expected) == []
    assert len(read_stream_metrics(s, "nb_windows")) >= 2
    for path in (produced, streamed):
        assert s.s3_secret_key.get_secret_value() not in path.read_text()


def test_producer_notebook_with_source_yahoo_sends_the_streamers_trades(
    settings, monkeypatch, tmp_path
):
    """As the demo's live session runs it: the notebook on a replay of the recorded session."""
    from stockpipe.sources.streamer_replay import ReplayServer, read_session

    session = read_session(PROJECT_ROOT / "data_samples/recorded/yahoo_streamer/session.jsonl")
    expected = [line["expect"]["tick"] for line in session if "tick" in line.get("expect", {})]
    topic = "test.notebooks.yahoo"
    monkeypatch.setenv("STOCKPIPE_TOPIC_TICKS", topic)
    with ReplayServer(session, speed=60, rebase=True) as server:
        monkeypatch.setenv("STOCKPIPE_YAHOO_STREAM_URL", server.url)
        produced = tmp_path / "stream_producer_yahoo.ipynb"
        pm.execute_notebook(
            NOTEBOOKS / "stream_producer.ipynb",
            produced,
            parameters=dict(source="yahoo", symbols="MSFT,GOOG", duration_s=12),
            kernel_name="stockpipe",
            cwd=str(tmp_path),
            progress_bar=False,
        )
        assert server.done.is_set()
    s = settings.model_copy(update={"topic_ticks": topic})
    ticks = parse_tick_values([v for *_, v in read_all(s, topic)])
    # the same trades, moved to now by the replay (as the demo sees them)
    assert sorted(zip(ticks["symbol"], ticks["price"], ticks["size"], strict=True)) == sorted(
        (t["symbol"], t["price"], t["size"]) for t in expected
    )
    now_ms = pd.Timestamp.now(tz="UTC").value // 10**6
    assert now_ms - 120_000 < ticks["ts"].max() <= now_ms
    shown = _outputs(produced)
    assert f"{len(expected)} ticks and 3 undecodable frames from yahoo" in shown
    assert "1 reconnects" in shown
