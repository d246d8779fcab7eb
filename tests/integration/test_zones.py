"""Every zone of the lake is a Delta table from the start: empty, with its job's schema.

A fresh lake after ``ensure_tables`` (and after ``stockpipe init``) has each table,
readable by any Delta reader; then the batch and streaming jobs write into those
tables, and each ends with the schema, partition columns and properties the jobs
give a table they make themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid

import pytest
from deltalake import DeltaTable

from stockpipe.changefeed import CDF_PROPERTY
from stockpipe.ingest import ingest
from stockpipe.kafka import ConfirmedProducer, ensure_topics
from stockpipe.lake import TABLES, ZONES, storage_options, table_uri
from stockpipe.reader import (
    read_quarantine,
    read_quarantined_ticks,
    read_raw_bars,
    read_raw_ticks,
    read_stream_metrics,
    read_tick_windows,
    zone_counts,
)
from stockpipe.schemas import QUARANTINE_COLUMNS, TABLE_LAYOUTS
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.tables import ensure_tables, kafka_progress

pytestmark = pytest.mark.integration


def _fresh(settings, tag: str):
    """Settings with a new bucket and topics of their own: a lake nothing wrote yet."""
    run = f"{tag}-{uuid.uuid4().hex[:6]}"
    s = settings.model_copy(
        update={
            "bucket": f"zones-{run}",
            "topic_bars": f"bars.{run}",
            "topic_ticks": f"ticks.{run}",
        }
    )
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars, s.topic_ticks], partitions=2)
    return s


def _delta(s, name: str) -> DeltaTable:
    return DeltaTable(table_uri(s, name), storage_options=storage_options(s))


def _assert_empty_zones(s) -> None:
    for name in TABLES:
        dt = _delta(s, name)  # no TableNotFoundError
        layout = TABLE_LAYOUTS[name]
        assert dt.version() == 0, name
        assert dt.to_pyarrow_table().num_rows == 0, name
        assert dt.schema().to_arrow().names == layout.schema.names, name
        assert dt.metadata().partition_columns == list(layout.partitions), name
        cdf = dt.metadata().configuration.get(CDF_PROPERTY) == "true"
        assert cdf == layout.change_feed, name
        assert kafka_progress(s, name) == {}, name


def test_ensure_tables_makes_every_zone_an_empty_delta_table(settings):
    s = _fresh(settings, "ensure")
    said: list[str] = []
    assert ensure_tables(s, say=said.append) == [ZONES[n] for n in TABLES]
    assert said == [f"created empty tables {', '.join(ZONES[n] for n in TABLES)}"]
    _assert_empty_zones(s)

    # the readers see empty tables with their columns
    quarantine = read_quarantine(s)
    assert len(quarantine) == 0 and list(quarantine.columns) == [
        *QUARANTINE_COLUMNS,
        "quarantine_date",
    ]
    for frame, layout in (
        (read_raw_bars(s), "raw_bars"),
        (read_raw_ticks(s), "raw_ticks"),
        (read_quarantined_ticks(s), "quarantine_ticks"),
        (read_tick_windows(s), "tick_windows"),
        (read_stream_metrics(s), "stream_metrics"),
    ):
        assert len(frame) == 0 and list(frame.columns) == TABLE_LAYOUTS[layout].schema.names
    assert zone_counts(s)["rows"].tolist() == [0] * 6

    # again: nothing to do, nothing committed
    assert ensure_tables(s) == []
    assert all(_delta(s, n).version() == 0 for n in TABLES)

    # the export loads empty tables (none skipped as missing); maintenance finds them
    from stockpipe.maintenance import maintain
    from stockpipe.warehouse.export import export

    wh = s.model_copy(update={"warehouse_schema": f"wh_{s.bucket.replace('-', '_')}"})
    report = export(wh)
    assert [x.mode for x in report.sources] == ["full"] * len(report.sources), str(report)
    assert report.counts == {"bars": 0, "tick_windows": 0, "quarantine_counts": 0}
    done = maintain(s)
    assert done.ok and not [t.table for t in done.tables if t.skipped], done.lines()


def test_concurrent_creators_make_each_table_once(settings):
    s = _fresh(settings, "race")
    made: list[list[str]] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            made.append(ensure_tables(s))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    created = [z for zones in made for z in zones]
    assert len(created) == len(set(created))  # no table made twice
    ensure_tables(s)  # a table a racer skipped (its lease was held) is made now
    _assert_empty_zones(s)


def test_init_command_creates_the_tables_and_says_so(settings, tmp_path):
    s = _fresh(settings, "init")
    # an env file of its own: another CLI test may have generated keys into the stack's
    env = {**os.environ, **s.to_env(), "STOCKPIPE_ENV_FILE": str(tmp_path / "none.env")}
    cmd = [sys.executable, "-m", "stockpipe.cli", "init"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr
    assert f"tables {', '.join(ZONES[n] for n in TABLES)};" in out.stdout
    _assert_empty_zones(s)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0 and "tables exist;" in out.stdout, out.stdout + out.stderr


# the jobs write into the tables made empty -------------------------------------------------


def _bad_ticks() -> list[tuple[bytes, bytes]]:
    good = {"schema_version": 1, "symbol": "AAPL", "ts": 1_704_205_800_000, "price": 190.5}
    return [
        (b"AAPL", b"not json"),
        (b"AAPL", json.dumps({**good, "size": 0, "seq": 0, "producer_id": "bad"}).encode()),
    ]


def _bar(ts: str, **changes) -> tuple[bytes, bytes]:
    bar = {
        "schema_version": 1,
        "symbol": "MSFT",
        "interval": "1d",
        "ts": ts,
        "open": 30.0,
        "high": 32.0,
        "low": 29.0,
        "close": 31.0,
        "adj_close": None,
        "volume": 1000,
        "source": "csv",
        "ingested_at": "2020-01-01T00:00:00.000Z",
        "batch_id": "zones",
    }
    return b"MSFT", json.dumps({**bar, **changes}).encode()


def _bad_bars() -> list[tuple[bytes, bytes]]:
    return [
        (b"MSFT", b"not json"),
        _bar("2012-06-01T00:00:00.000Z", high=1.0),  # high below the range
        (b"MSFT", b"\xff\xfe"),
    ]


def _send(s, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    with ConfirmedProducer(s, topic) as producer:
        producer.send_many(records)


def _ticks(s) -> None:
    from stockpipe.ticks import TickSpec, run_producer

    spec = TickSpec(
        symbols=("AAPL", "MSFT"), seed=3, rate=100, start_ms=1_704_205_800_000, step_ms=50
    )
    assert run_producer(s, spec, rate=5000, max_ticks=600).failed == 0
    _send(s, s.topic_ticks, _bad_ticks())


def _run_jobs(s, spark, stream_spark) -> None:
    from stockpipe.spark.batch import run_batch_job
    from stockpipe.spark.streaming import StreamOptions, run_stream

    assert ingest(s, "samples", "MSFT", start="2012-01-01", end="2012-03-31", progress=False).ok
    _send(s, s.topic_bars, _bad_bars())
    report = run_batch_job(s, spark=spark)
    assert report.quarantined_rows == 3 and report.processed_rows_written > 40
    # a bar amid those the table holds changes its successors' derived columns: a MERGE
    _send(s, s.topic_bars, [_bar("2012-02-15T12:00:00.000Z")])
    assert run_batch_job(s, spark=spark).processed_rows_written > 1
    assert "MERGE" in [c["operation"] for c in _delta(s, "processed_bars").history()]
    _ticks(s)
    opts = StreamOptions(
        window="10 seconds",
        slide="5 seconds",
        watermark="5 seconds",
        mode="available-now",
        name="zones",
        duration_s=300,
        state_partitions=2,
    )
    assert run_stream(s, opts, spark=stream_spark).stopped_by == "backlog done"


def _layout(dt: DeltaTable) -> tuple[list[tuple[str, str]], list[str], str | None]:
    """A table's columns with their Delta types, its partition columns and its feed."""
    fields = json.loads(dt.schema().to_json())["fields"]
    columns = [(f["name"], json.dumps(f["type"], sort_keys=True)) for f in fields]
    meta = dt.metadata()
    return columns, meta.partition_columns, meta.configuration.get(CDF_PROPERTY)


def test_jobs_write_into_the_empty_tables_with_the_schema_they_make(
    settings, spark, stream_spark, monkeypatch
):
    """The batch job and the streaming job append and merge into the created tables;
    each keeps the schema it was created with, the schema the jobs give a table on a
    lake they start."""
    import stockpipe.spark.batch
    import stockpipe.spark.streaming

    made = _fresh(settings, "made")
    ensure_tables(made)
    created = {n: _delta(made, n).schema().to_json() for n in TABLES}
    _run_jobs(made, spark, stream_spark)

    # the same runs on a lake no ensure_tables call touches: the tables the jobs make
    baseline = _fresh(settings, "jobs")
    for job in (stockpipe.spark.batch, stockpipe.spark.streaming):
        monkeypatch.setattr(job, "ensure_tables", lambda *_a, **_k: [], raising=False)
    _run_jobs(baseline, spark, stream_spark)

    for name in TABLES:
        dt = _delta(made, name)
        assert dt.to_pyarrow_table().num_rows > 0, name
        assert dt.schema().to_json() == created[name], f"{name}: its writes changed the schema"
        assert _layout(dt) == _layout(_delta(baseline, name)), name
        assert _delta(baseline, name).history()[-1]["operation"] != "CREATE TABLE", name
    assert len(read_quarantine(made)) == 3
    assert len(read_quarantined_ticks(made)) == 2
