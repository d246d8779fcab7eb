"""The DAGs for real: `airflow dags test` against the test stack, notebooks through papermill.

Three DAG runs, each made once per module (they cost minutes): the batch
pipeline on one sample symbol and a short window, the stream DAG's available-now
run over ticks produced here, and the batch pipeline with a source that does not
exist. Every test asserts on what those runs left in MinIO, the lake and the logs.

The runs use their own bucket and topics (handed to Airflow and the notebooks
through the environment, as any setting is), so the streaming job's watermark
and the lake's tables hold only what this module produced.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from stockpipe.config import PROJECT_ROOT, Settings
from stockpipe.lake import filesystem
from stockpipe.stack.airflow import DagTestResult, dags_test, ensure_db

pytestmark = pytest.mark.integration

#: Given to the notebooks through the environment, as a real key would be.
FAKE_API_KEY = "itest-alphavantage-key-7Qx2Lm9Z"
#: END is a Saturday: the same bars whether a source reads it as inclusive or exclusive.
SYMBOL, START, END = "MSFT", "2017-10-02", "2017-11-11"
TICK_SYMBOLS = ("ZQA", "ZQB")


def run_dag(settings: Settings, dag_id: str, conf: dict, log_dir: Path) -> DagTestResult:
    ensure_db(settings, log=lambda _m: None)
    return dags_test(
        settings,
        dag_id,
        conf,
        log_file=log_dir / f"{dag_id}-{time.time_ns()}.log",
        extra_env={"ALPHAVANTAGE_API_KEY": FAKE_API_KEY},
        timeout_s=1200,
    )


def executed_notebooks(settings: Settings, result: DagTestResult) -> dict[str, dict]:
    """task_id -> executed notebook (JSON) of one run, read back from MinIO."""
    fs = filesystem(settings)
    prefix = f"{settings.bucket}/notebooks/{result.dag_id}/{result.run_id}"
    return {
        Path(key).stem: json.loads(fs.cat(key)) for key in fs.find(prefix) if key.endswith(".ipynb")
    }


@pytest.fixture(scope="module")
def af_settings(settings) -> Settings:
    """The test stack with a bucket and topics of this module's own."""
    from stockpipe.kafka import ensure_topics
    from stockpipe.stack.minio_access import provision_bucket

    own = settings.model_copy(
        update={
            "bucket": "itest-airflow",
            "topic_bars": "itest.airflow.bars",
            "topic_ticks": "itest.airflow.ticks",
            "warehouse_schema": "itest_airflow",
        }
    )
    provision_bucket(own)
    ensure_topics(own)
    return own


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("airflow-logs")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def batch_run(af_settings, log_dir, report_dir) -> DagTestResult:
    conf = {"symbols": SYMBOL, "start": START, "end": END, "report_dir": str(report_dir)}
    return run_dag(af_settings, "stock_batch_pipeline", conf, log_dir)


@pytest.fixture(scope="module")
def produced_ticks(af_settings) -> pd.DataFrame:
    """2,000 ticks of two symbols over 200 s of event time, ten minutes ago."""
    from stockpipe.ticks import TickSpec, run_producer

    kept: list[pd.DataFrame] = []
    spec = TickSpec(
        symbols=TICK_SYMBOLS,
        seed=11,
        rate=10,
        start_ms=int(time.time() * 1000) - 600_000,
        step_ms=100,
        out_of_order_fraction=0.0,
        late_fraction=0.0,
    )
    report = run_producer(af_settings, spec, max_ticks=2000, keep=kept)
    assert report.sent == 2000
    return pd.concat(kept, ignore_index=True)


@pytest.fixture(scope="module")
def stream_run(af_settings, log_dir, produced_ticks) -> DagTestResult:
    conf = {"window": "20 seconds", "slide": "10 seconds", "watermark": "5 seconds"}
    return run_dag(af_settings, "stock_stream_pipeline", conf, log_dir)


#: A Yahoo download in a US-locale layout (1/4/1999 dates), named for no symbol.
EXPORT = PROJECT_ROOT / "data_samples" / "exports" / "goog-daily-yahoo-us.csv"


@pytest.fixture(scope="module")
def export_run(af_settings, log_dir, report_dir) -> tuple[Settings, DagTestResult]:
    """The batch DAG on the whole export (8.5 years), in a bucket and topic of its own."""
    from stockpipe.kafka import ensure_topics
    from stockpipe.stack.minio_access import provision_bucket

    own = af_settings.model_copy(
        update={"bucket": "itest-airflow-csv", "topic_bars": "itest.airflow.csvbars"}
    )
    provision_bucket(own)
    ensure_topics(own, [own.topic_bars])
    conf = {"source": "csv", "path": str(EXPORT), "symbols": "GOOG", "full_history": True}
    conf["report_dir"] = str(report_dir)
    return own, run_dag(own, "stock_batch_pipeline", conf, log_dir)


@pytest.fixture(scope="module")
def failed_run(af_settings, log_dir, report_dir) -> DagTestResult:
    conf = {"source": "nosuch", "symbols": SYMBOL, "start": START, "end": END}
    conf["report_dir"] = str(report_dir)
    return run_dag(af_settings, "stock_batch_pipeline", conf, log_dir)


def test_batch_dag_run_succeeds_and_leaves_processed_bars_and_notebooks(
    af_settings, batch_run, report_dir
):
    from stockpipe.reader import read_bars

    assert batch_run.ok, batch_run.log_file.read_text()[-5000:]
    assert {t.task_id: t.state for t in batch_run.tasks} == {
        "check_stack": "success",
        "batch_producer": "success",
        "wait_for_new_records": "success",
        "spark_batch": "success",
        "export": "success",
        "charts": "success",
    }

    sample = pd.read_csv(PROJECT_ROOT / "data_samples" / f"{SYMBOL}.csv", parse_dates=["Date"])
    expected = sample[(sample.Date >= START) & (sample.Date <= END)]
    bars = read_bars(af_settings, SYMBOL, START, END)
    assert len(bars) == len(expected) > 20
    assert list(bars.close.round(6)) == list(expected.Close.round(6))

    # the export task left the warehouse holding exactly the processed bars
    from stockpipe.warehouse.connection import read_sql

    schema = af_settings.warehouse_schema
    exported = read_sql(
        af_settings,
        f"SELECT ts, close FROM \"{schema}\".bars WHERE symbol = '{SYMBOL}' ORDER BY ts",
    )
    assert list(exported.close) == list(bars.sort_values("ts").close)

    notebooks = executed_notebooks(af_settings, batch_run)
    assert set(notebooks) == {"batch_producer", "spark_batch", "export", "charts"}
    producer = notebooks["batch_producer"]["metadata"]["papermill"]
    assert producer["parameters"]["start"] == START and producer["parameters"]["symbols"] == SYMBOL
    assert all(nb["metadata"]["papermill"]["exception"] is None for nb in notebooks.values())
    assert list(report_dir.glob("*/market-report-*.html"))


def test_a_us_dated_yahoo_export_goes_through_the_batch_dag_as_pandas_reads_it(export_run):
    from oracles.bars import assert_same_bars, expected_processed

    from stockpipe.reader import read_bars

    settings, run = export_run
    assert run.ok, run.log_file.read_text()[-5000:]
    # the reference: pandas told the layout, not the source's detection
    ref = pd.read_csv(EXPORT)
    bars = pd.DataFrame(
        {
            "symbol": "GOOG",
            "interval": "1d",
            "ts": pd.to_datetime(ref["Date"], format="%m/%d/%Y", utc=True),
            "open": ref["Open"],
            "high": ref["High"],
            "low": ref["Low"],
            "close": ref["Close"],
            "adj_close": ref["Adj Close"],
            "volume": ref["Volume"],
            "ingested_at": pd.Timestamp("2000-01-01", tz="UTC"),
        }
    )
    actual = read_bars(settings, "GOOG")
    assert len(actual) == len(ref) == 2148
    assert actual["ts"].min() == pd.Timestamp("2004-08-19", tz="UTC")
    assert_same_bars(actual, expected_processed(bars))


def test_stream_dag_available_now_processes_the_produced_ticks(
    af_settings, stream_run, produced_ticks
):
    from stockpipe.reader import read_raw_ticks, read_tick_windows

    assert stream_run.ok, stream_run.log_file.read_text()[-5000:]
    raw = read_raw_ticks(af_settings)
    ours = raw[raw["key"].isin(TICK_SYMBOLS)]
    assert len(ours) == len(produced_ticks)  # every tick once: none lost, none doubled

    windows = read_tick_windows(af_settings, symbols=TICK_SYMBOLS)
    assert set(windows.symbol) == set(TICK_SYMBOLS)
    ours_windows = windows[windows.symbol == TICK_SYMBOLS[0]]
    first = ours_windows.iloc[len(ours_windows) // 2]  # a full window, not an edge
    ticks = produced_ticks[produced_ticks.symbol == TICK_SYMBOLS[0]]
    ts = pd.to_datetime(ticks.ts, unit="ms", utc=True)  # event time, epoch ms
    inside = ticks[(ts >= first.window_start) & (ts < first.window_end)]
    assert first.trade_count == len(inside)
    assert set(executed_notebooks(af_settings, stream_run)) == {"spark_streaming", "export"}
    from stockpipe.warehouse.connection import read_sql

    in_warehouse = read_sql(
        af_settings, f'SELECT count(*) AS n FROM "{af_settings.warehouse_schema}".tick_windows'
    )
    assert int(in_warehouse["n"].iloc[0]) == len(read_tick_windows(af_settings))


def test_an_unknown_source_fails_its_task_once_with_the_error_in_the_log(af_settings, failed_run):
    states = {t.task_id: t.state for t in failed_run.tasks}
    assert failed_run.state == "failed"
    assert states["batch_producer"] == "failed"
    assert states["spark_batch"] == states["charts"] == states["export"] == "upstream_failed"
    producer = next(t for t in failed_run.tasks if t.task_id == "batch_producer")
    assert producer.tries == 1  # an unknown source cannot be fixed by retrying

    log = failed_run.log_file.read_text()
    assert "UnknownNameError: unknown source 'nosuch'" in log
    assert "choose one of: alphavantage, csv, samples, synthetic, yahoo" in log

    # the task checks its parameters before the kernel starts: no notebook ran
    assert "batch_producer" not in executed_notebooks(af_settings, failed_run)


def test_a_bad_parameter_fails_the_run_once_and_names_the_parameter(af_settings, log_dir):
    # an end before its start: no retry can fix it (it was retried twice, issue 34)
    conf = {"symbols": SYMBOL, "start": END, "end": START}
    run = run_dag(af_settings, "stock_batch_pipeline", conf, log_dir)
    states = {t.task_id: t.state for t in run.tasks}
    assert run.state == "failed", states
    assert states["check_stack"] == "success"
    assert states["batch_producer"] == "failed"
    assert states["spark_batch"] == states["export"] == "upstream_failed"
    producer = next(t for t in run.tasks if t.task_id == "batch_producer")
    assert producer.tries == 1
    log = run.log_file.read_text()
    assert f"parameter `end`: '{START}' is not after start '{END}'" in log
    assert "batch_producer failed with an error a retry cannot fix" in log
    # refused before its kernel started: nothing was sent, no notebook was run
    assert "batch_producer" not in executed_notebooks(af_settings, run)


def test_a_day_without_bars_skips_the_run_instead_of_failing_it(af_settings, log_dir, report_dir):
    # 2017-11-11 and 12 are a Saturday and a Sunday: the source has no daily bars
    conf = {"symbols": SYMBOL, "start": "2017-11-11", "end": "2017-11-13"}
    run = run_dag(
        af_settings, "stock_batch_pipeline", {**conf, "report_dir": str(report_dir)}, log_dir
    )
    states = {t.task_id: t.state for t in run.tasks}
    assert run.state == "success", states
    assert states["check_stack"] == "success"
    assert states["batch_producer"] == "skipped"
    skipped = ("wait_for_new_records", "spark_batch", "export", "charts")
    assert {states[t] for t in skipped} == {"skipped"}
    producer = next(t for t in run.tasks if t.task_id == "batch_producer")
    assert producer.tries == 1
    assert "the market was closed (a weekend or a holiday)" in run.log_file.read_text()
    nb = executed_notebooks(af_settings, run)["batch_producer"]
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["NothingNewError"]


def test_no_executed_notebook_in_minio_contains_a_secret(
    af_settings, batch_run, stream_run, failed_run
):
    fs = filesystem(af_settings)
    keys = [k for k in fs.find(f"{af_settings.bucket}/notebooks") if k.endswith(".ipynb")]
    assert len(keys) >= 5  # 3 batch + 1 stream + the failed producer
    secret = af_settings.s3_secret_key.get_secret_value()
    for key in keys:
        text = fs.cat(key).decode()
        assert secret not in text, key
        assert FAKE_API_KEY not in text, key


# A hung job, a retry beside it, a stuck job (issue 25) -------------------------------------

#: The hung batch job's timeout: long enough for Spark to start and take its leases.
HANG_TIMEOUT_S = 180


def _own_lake(settings: Settings, name: str, **update) -> Settings:
    from stockpipe.kafka import ensure_topics
    from stockpipe.stack.minio_access import provision_bucket

    own = settings.model_copy(
        update={"bucket": f"itest-airflow-{name}", "topic_bars": f"itest.airflow.{name}", **update}
    )
    provision_bucket(own)
    ensure_topics(own, [own.topic_bars])
    return own


def _survivors(settings: Settings) -> list[str]:
    """Processes of a notebook run (they carry RUN_ENV) against ``settings``' bucket."""
    import psutil

    from stockpipe.notebooks import RUN_ENV

    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            ours = RUN_ENV in env and env.get("STOCKPIPE_BUCKET") == settings.bucket
            ours = ours and env.get("STOCKPIPE_STATE_DIR") == str(settings.state_dir)
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.name()} (pid {proc.pid}): {' '.join(proc.cmdline()[:4])}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def hung_run(af_settings, log_dir, report_dir):
    """The batch DAG while this test holds raw/bars' lease (a job still running, for
    the DAG): spark_batch takes the other two leases, waits, times out and is retried.
    The lease is let go once the retry holds processed/bars; what was seen then is kept.
    """
    import threading

    from stockpipe.lease import Lease, hold

    own = _own_lake(
        af_settings,
        "hang",
        batch_timeout_s=HANG_TIMEOUT_S,
        task_retries=1,
        lease_ttl_s=20.0,
    )
    seen: dict = {}
    done = threading.Event()

    def holder_of(name: str):
        holder = Lease(own, name).current_holder()
        return None if holder is None or holder.expired else holder

    def watch(release: threading.Event) -> None:
        deadline = time.monotonic() + 1500
        try:
            while not done.is_set() and time.monotonic() < deadline:
                holder = holder_of("processed/bars")
                if holder is not None and "first" not in seen:
                    seen["first"] = holder  # the first attempt's job
                    first_seen = time.monotonic()
                elif holder is not None and holder.holder == seen["first"].holder:
                    seen["first held for"] = time.monotonic() - first_seen
                elif holder is not None:
                    seen["retry"] = holder
                    seen["first alive then"] = _alive(seen["first"].pid)
                    seen["survivors then"] = _survivors(own)
                    seen["raw version then"] = _version(own, "raw_bars")
                    return
                time.sleep(1)
        finally:
            release.set()

    release = threading.Event()
    conf = {"symbols": SYMBOL, "start": START, "end": END, "report_dir": str(report_dir)}
    with hold(own, ["raw/bars"], job="itest: a job still running", ttl_s=20.0):
        seen["raw version before"] = _version(own, "raw_bars")
        watcher = threading.Thread(target=watch, args=(release,), daemon=True)
        watcher.start()
        runner: dict = {}
        thread = threading.Thread(
            target=lambda: runner.setdefault(
                "run", run_dag(own, "stock_batch_pipeline", conf, log_dir)
            ),
            daemon=True,
        )
        thread.start()
        release.wait(1500)
    thread.join(1500)
    done.set()
    watcher.join(10)
    return own, runner["run"], seen


def _version(settings: Settings, table: str) -> int | None:
    from stockpipe.tables import open_table

    dt = open_table(settings, table)
    return None if dt is None else dt.version()


def test_a_hung_job_times_out_its_processes_stop_and_the_retry_waits_for_the_lease(hung_run):
    from stockpipe.reader import read_bars
    from stockpipe.tables import row_count

    settings, run, seen = hung_run
    log = run.log_file.read_text()
    assert run.ok, log[-5000:]
    batch = next(t for t in run.tasks if t.task_id == "spark_batch")
    assert batch.tries == 2  # timed out once, then retried
    assert f"spark_batch did not finish within {HANG_TIMEOUT_S} s" in log
    assert "STOCKPIPE_BATCH_TIMEOUT_S" in log
    # stopped by the timeout itself (the kernel, a client of the Spark Connect server:
    # no JVM of its own), before papermill's clean-up could interrupt the kernel: the
    # job never released its leases while Spark ran, they expired, and the retry took
    # them over
    [stopped] = [line for line in log.splitlines() if "stopped what the notebook left" in line]
    assert "python" in stopped and "java" not in stopped
    topic = settings.topic_bars
    assert f"lease of processed/bars held by spark batch job on {topic}" in log
    assert "taking it over" in log

    # the first attempt's job held processed/bars; when the retry took that lease,
    # the first job's kernel and every process of its run were gone
    first, retry = seen["first"], seen["retry"]
    assert first.job == retry.job == f"spark batch job on {settings.topic_bars}"
    assert first.pid != retry.pid
    # while it waited for raw/bars, the job renewed the leases it held (ttl 20 s)
    assert seen["first held for"] > 3 * 20
    assert seen["first alive then"] is False
    assert not [s for s in seen["survivors then"] if f"(pid {first.pid})" in s]
    # nothing was written to raw/bars while this test held its lease
    assert seen["raw version then"] == seen["raw version before"]
    # and once let go, the retry wrote every record once
    sample = pd.read_csv(PROJECT_ROOT / "data_samples" / f"{SYMBOL}.csv", parse_dates=["Date"])
    expected = sample[(sample.Date >= START) & (sample.Date <= END)]
    assert len(read_bars(settings, SYMBOL, START, END)) == len(expected)
    assert row_count(settings, "raw_bars") == len(expected)
    # after the run, no process of any of its notebooks is left
    assert _survivors(settings) == []


def test_progress_is_a_commit_that_moves_the_offsets_not_any_commit(hung_run):
    from deltalake import CommitProperties

    from stockpipe.maintenance import carried_metadata
    from stockpipe.orchestration import offsets_moved_at
    from stockpipe.tables import open_table, recent_commits

    settings, _run, _seen = hung_run
    moved = offsets_moved_at(settings, "processed_bars", settings.topic_bars)
    dt = open_table(settings, "processed_bars")
    [newest] = dt.history(1)
    assert moved == newest["timestamp"] / 1000  # the job's own commit
    # a commit that carries the offsets unchanged, as maintenance's commits do
    same = CommitProperties(custom_metadata={"userMetadata": carried_metadata(recent_commits(dt))})
    dt.alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 31 days"}, commit_properties=same
    )
    [newest] = open_table(settings, "processed_bars").history(1)
    assert newest["operation"] == "SET TBLPROPERTIES" and newest["timestamp"] / 1000 > moved
    assert offsets_moved_at(settings, "processed_bars", settings.topic_bars) == moved
    assert offsets_moved_at(settings, "processed_bars", "no.such.topic") is None


def test_the_sensor_fails_when_records_wait_beside_a_job_that_makes_no_progress(
    af_settings, log_dir, report_dir
):
    import os

    from stockpipe.lease import hold

    own = _own_lake(af_settings, "stuck", batch_stall_s=5.0)
    conf = {"symbols": SYMBOL, "start": START, "end": END, "report_dir": str(report_dir)}
    # a job that holds the bars tables (its lease renewed) but commits nothing
    with hold(own, ["raw/bars"], job="itest: a stuck job"):
        run = run_dag(own, "stock_batch_pipeline", conf, log_dir)
    states = {t.task_id: t.state for t in run.tasks}
    assert run.state == "failed"
    assert states["batch_producer"] == "success"
    assert states["wait_for_new_records"] == "failed"
    assert states["spark_batch"] == "upstream_failed"
    log = run.log_file.read_text()
    assert "are waiting, but the batch job is stuck: itest: a stuck job" in log
    assert f"pid {os.getpid()} on" in log and "holds the lease of raw/bars" in log
    assert "STOCKPIPE_BATCH_STALL_S = 5" in log
