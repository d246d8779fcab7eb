"""The DAG folder parses, and each DAG has the tasks, order and settings issue 6 asks for.

No services: the DAG files are parsed with Airflow's DagBag under a throwaway
AIRFLOW_HOME, with settings overridden through the environment as a user would.
"""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from stockpipe.config import get_settings, load_settings
from stockpipe.stack.airflow import airflow_env, ensure_password, password_file

SECRET = "unit-secret-key-0123456789abcdef"
API_KEY = "unit-api-key-ABCDEFGH"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(
        env_file=tmp_path_factory.mktemp("none") / "no.env",
        state_dir=tmp_path_factory.mktemp("state"),
        bucket="unit-lake",
        s3_access_key="unit-access",
        s3_secret_key=SECRET,
        alphavantage_api_key=API_KEY,
        batch_symbols="AAPL,IBM",
        batch_schedule="30 6 * * *",
        stream_schedule="*/20 * * * *",
        maintenance_schedule="15 3 * * *",
        batch_timeout_s=5400,
        lease_wait_s=900,
    )


@pytest.fixture(scope="module")
def dagbag(settings):
    """Every DAG of dags/, parsed with the settings above in the environment."""
    saved = dict(os.environ)
    os.environ.update({**settings.to_env(), **airflow_env(settings)})
    get_settings.cache_clear()
    try:
        from airflow.dag_processing.dagbag import DagBag

        from stockpipe.orchestration import DAGS_DIR

        yield DagBag(dag_folder=str(DAGS_DIR))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "stock_batch_pipeline",
        "stock_stream_pipeline",
        "stock_stream_live",
        "stock_charts",
        "stock_lake_maintenance",
    }


def test_batch_dag_tasks_in_order_with_schedule_and_params_from_settings(dagbag):
    dag = dagbag.dags["stock_batch_pipeline"]
    assert edges(dag) == {
        ("check_stack", "batch_producer"),
        ("batch_producer", "wait_for_new_records"),
        ("wait_for_new_records", "spark_batch"),
        ("spark_batch", "charts"),
        ("spark_batch", "export"),
    }
    assert dag.catchup is False
    assert dag.timetable.expression == "30 6 * * *"  # STOCKPIPE_BATCH_SCHEDULE
    assert dag.params["symbols"] == "AAPL,IBM"  # STOCKPIPE_BATCH_SYMBOLS
    assert dag.params["source"] == "samples"

    sensor = dag.get_task("wait_for_new_records")
    assert sensor.mode == "reschedule"
    assert 0 < sensor.timeout <= 3600
    assert sensor.retries == 0  # a timeout means no data: retrying cannot help

    for task_id in ("check_stack", "batch_producer", "spark_batch", "charts"):
        task = dag.get_task(task_id)
        assert task.retries == 2 and task.retry_exponential_backoff, task_id


def test_every_notebook_task_is_papermill_writing_to_the_lake(dagbag):
    from airflow.providers.papermill.operators.papermill import PapermillOperator

    notebook_tasks = [
        (dag.dag_id, t)
        for dag in dagbag.dags.values()
        for t in dag.tasks
        if t.task_id not in ("check_stack", "wait_for_new_records", "maintain_lake")
    ]
    assert len(notebook_tasks) == 9
    for dag_id, task in notebook_tasks:
        assert isinstance(task, PapermillOperator), (dag_id, task.task_id)
        assert task.output_nb == (
            f"s3://unit-lake/notebooks/{{{{ dag.dag_id }}}}/{{{{ run_id }}}}/{task.task_id}.ipynb"
        )
        assert task.kernel_name == "stockpipe"


def test_every_parameter_a_dag_passes_is_one_its_notebook_declares(dagbag):
    from papermill import inspect_notebook

    checked = 0
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if not getattr(task, "notebook", None):
                continue
            declared = set(inspect_notebook(str(task.input_nb)))
            assert set(task.parameters or {}) <= declared, (dag.dag_id, task.task_id)
            checked += 1
    assert checked == 9
    live = dagbag.dags["stock_stream_live"]
    assert live.get_task("spark_streaming").parameters["archive_trigger"] == (
        "{{ params.archive_trigger }}"
    )
    assert live.params["archive_trigger"] == "15 seconds"
    assert live.get_task("stream_producer").parameters["source"] == "{{ params.source }}"
    assert live.params["source"] == "synthetic"  # live trades only when asked
    assert live.params.get_param("source").schema["enum"] == ["synthetic", "yahoo", "finnhub"]
    batch = dagbag.dags["stock_batch_pipeline"]
    assert batch.get_task("batch_producer").parameters["options"] == "{{ params.options }}"


def test_processed_data_are_assets_that_schedule_the_charts(dagbag):
    batch = dagbag.dags["stock_batch_pipeline"]
    outlets = [a.uri for a in batch.get_task("spark_batch").outlets]
    assert outlets == ["s3://unit-lake/processed/bars"]
    stream = dagbag.dags["stock_stream_pipeline"]
    assert [a.uri for a in stream.get_task("spark_streaming").outlets] == [
        "s3://unit-lake/processed/tick_windows"
    ]
    charts = dagbag.dags["stock_charts"]
    assert [a.uri for a in charts.timetable.asset_condition.objects] == [
        "s3://unit-lake/processed/tick_windows"
    ]
    assert [t.task_id for t in charts.tasks] == ["charts"]


def test_exports_after_the_jobs_with_a_warehouse_asset_per_table(dagbag):
    batch = dagbag.dags["stock_batch_pipeline"].get_task("export")
    stream = dagbag.dags["stock_stream_pipeline"].get_task("export")
    assert batch.parameters == {"target": "", "tables": "bars,quarantine_counts"}
    assert stream.parameters["tables"] == "tick_windows,quarantine_counts"
    uris = {a.name: a.uri for t in (batch, stream) for a in t.outlets}
    assert set(uris) == {"warehouse_bars", "warehouse_tick_windows", "warehouse_quarantine_counts"}
    assert all(u.startswith("postgres://127.0.0.1:") for u in uris.values())
    assert uris["warehouse_bars"].endswith("/stockpipe/stockpipe/bars")


def test_stream_dags_available_now_scheduled_and_live_side_by_side(dagbag):
    scheduled = dagbag.dags["stock_stream_pipeline"]
    assert edges(scheduled) == {("check_stack", "spark_streaming"), ("spark_streaming", "export")}
    assert scheduled.timetable.expression == "*/20 * * * *"
    assert scheduled.get_task("spark_streaming").parameters["run_mode"] == "available-now"

    live = dagbag.dags["stock_stream_live"]
    assert live.schedule is None  # manual only
    # both jobs start after the stack check, neither waits for the other
    assert edges(live) == {
        ("check_stack", "stream_producer"),
        ("check_stack", "spark_streaming"),
    }
    assert live.get_task("spark_streaming").parameters["run_mode"] == "continuous"
    for dag in (scheduled, live):
        assert dag.get_task("spark_streaming").pool == "stockpipe_streaming"
        assert dag.max_active_runs == 1


def test_lake_maintenance_dag_runs_in_the_lake_writer_pool_beside_no_batch_write(dagbag):
    dag = dagbag.dags["stock_lake_maintenance"]
    assert edges(dag) == {("check_stack", "maintain_lake")}
    assert dag.timetable.expression == "15 3 * * *"  # STOCKPIPE_MAINTENANCE_SCHEDULE
    assert dag.catchup is False and dag.max_active_runs == 1
    task = dag.get_task("maintain_lake")
    assert task.pool == "stockpipe_lake_writer"
    assert task.retries == 2 and task.retry_exponential_backoff
    # the batch job's writes take the same one-slot pool
    assert dagbag.dags["stock_batch_pipeline"].get_task("spark_batch").pool == task.pool
    # no retention under 7 days from the trigger form
    assert dag.params["retention_hours"] == 168
    assert dag.params.get_param("retention_hours").schema["minimum"] == 168
    assert dag.params["tables"] == ""


def test_the_maintenance_schedule_defaults_to_daily():
    from stockpipe.config import Settings

    assert Settings.model_fields["maintenance_schedule"].default == "@daily"


def test_maintenance_task_fails_clearly_and_retries_only_when_a_lease_was_held(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    import stockpipe.maintenance as m
    import stockpipe.orchestration as orch
    from stockpipe.errors import LakeError

    report = m.MaintenanceReport([m.TableReport("processed_bars")])
    calls: list[tuple] = []

    def fake_maintain(settings, tables, *, retention_hours):
        calls.append((tables, retention_hours))
        return report

    monkeypatch.setattr(m, "maintain", fake_maintain)
    context = {"params": {"tables": "processed_bars, raw_bars", "retention_hours": 200}}
    monkeypatch.setattr("airflow.sdk.get_current_context", lambda: context)
    run = orch.maintain_lake.function
    assert run()["ok"] is True
    assert calls == [(["processed_bars", "raw_bars"], 200)]

    report.tables[0].held = "processed/bars is being written by spark batch job"
    with pytest.raises(LakeError, match=r"\(retried later\): processed_bars: processed/bars is"):
        run()
    report.tables[0].error = "OPTIMIZE of processed/bars failed: boom"
    with pytest.raises(AirflowFailException, match="boom"):
        run()


def test_no_secret_in_any_notebook_parameter(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            text = json.dumps(getattr(task, "parameters", None) or {}) + json.dumps(
                {k: str(v) for k, v in dag.params.items()}
            )
            assert SECRET not in text and API_KEY not in text, (dag.dag_id, task.task_id)


def test_a_secret_passed_as_parameter_is_refused(settings):
    from stockpipe.errors import SecretParameterError
    from stockpipe.notebooks import check_no_secrets

    check_no_secrets({"symbols": "MSFT"}, settings)
    with pytest.raises(SecretParameterError, match="'token'"):
        check_no_secrets({"symbols": "MSFT", "token": f"key={API_KEY}"}, settings)
    with pytest.raises(SecretParameterError, match="environment"):
        check_no_secrets({"x": SECRET}, settings)
    warehouse = settings.model_copy(update={"postgres_password": SecretStr("pg-password-1")})
    with pytest.raises(SecretParameterError, match="'target'"):
        check_no_secrets({"target": "postgresql://u:pg-password-1@h/db"}, warehouse)


def test_run_window_follows_the_data_interval_unless_params_say_otherwise():
    from stockpipe.orchestration import window_end, window_start

    start = datetime(2024, 3, 4, tzinfo=UTC)
    end = datetime(2024, 3, 5, tzinfo=UTC)
    none: dict = {"start": "", "end": "", "full_history": False}
    # the interval [2024-03-04, 2024-03-05): the sources read end as exclusive
    assert (window_start(none, start), window_end(none, end)) == ("2024-03-04", "2024-03-05")
    explicit = {**none, "start": "2017-10-02", "end": "2017-11-10"}
    assert (window_start(explicit, start), window_end(explicit, end)) == (
        "2017-10-02",
        "2017-11-10",
    )
    everything = {**explicit, "full_history": True}
    assert (window_start(everything, start), window_end(everything, end)) == ("", "")


def test_airflow_env_binds_localhost_and_uses_the_state_dir(settings):
    env = airflow_env(settings)
    assert env["AIRFLOW_HOME"] == str(settings.state_dir / "airflow")
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://127.0.0.1:")


def test_admin_password_generated_once_private_and_used_by_airflow(settings):
    first = ensure_password(settings)
    assert first and len(first) >= 16
    path = password_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"admin": first}
    assert ensure_password(settings) is None  # printed once: not generated again
    assert json.loads(path.read_text()) == {"admin": first}
    assert airflow_env(settings)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(path)


def test_sensor_passes_on_new_records_and_times_out_saying_what_is_missing(monkeypatch, dagbag):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    import stockpipe.orchestration as orch

    pending = {"n": 3}
    monkeypatch.setattr(
        orch, "batch_activity", lambda _s, topic: orch.BatchActivity(topic, pending["n"])
    )
    sensor = orch.NewRecordsSensor(
        task_id="wait", topic="stock.bars", mode="poke", timeout=0, poke_interval=0
    )
    sensor.execute({})  # 3 records waiting: done at the first poke

    pending["n"] = 0
    with pytest.raises(AirflowSensorTimeout, match=r"no new records on stock\.bars beyond what"):
        sensor.execute({})


#: The batch producer task's parameters as Airflow renders them for a run.
PRODUCER_PARAMETERS = {
    "source": "samples",
    "symbols": "MSFT",
    "start": "2017-11-11",
    "end": "2017-11-13",
    "interval": "1d",
    "path": "",
    "options": "",
    "allow_empty": True,
}


def test_a_notebook_with_nothing_to_do_skips_its_task_and_a_failure_fails(dagbag, monkeypatch):
    from airflow.providers.papermill.operators.papermill import PapermillOperator
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
    from papermill.exceptions import PapermillExecutionError

    task = dagbag.dags["stock_batch_pipeline"].get_task("batch_producer")
    assert task.parameters["allow_empty"] is True  # scheduled days may hold no bars
    monkeypatch.setattr(task, "parameters", PRODUCER_PARAMETERS)  # as Airflow renders them

    def fails_with(ename: str, evalue: str):
        def execute(self, context):
            raise PapermillExecutionError(7, 7, "raise ...", ename, evalue, [])

        monkeypatch.setattr(PapermillOperator, "execute", execute)

    fails_with("NothingNewError", "no 1d bars for MSFT in [2017-11-11, 2017-11-13)")
    with pytest.raises(AirflowSkipException, match=r"batch_producer: no 1d bars for MSFT"):
        task.execute({})
    fails_with("UnknownNameError", "unknown source 'nosuch'")
    with pytest.raises(AirflowFailException, match="a retry cannot fix"):
        task.execute({})
    fails_with("RuntimeError", "no bars were fetched: samples: MSFT: boom")
    with pytest.raises(PapermillExecutionError):
        task.execute({})


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (
            {"start": "2017-11-11", "end": "2017-10-02"},
            "parameter `end`: '2017-10-02' is not after",
        ),
        ({"start": "2017-13-45"}, "parameter `start`: '2017-13-45' is not a date"),
        ({"options": "{dayfirst: true}"}, "parameter `options`: '{dayfirst: true}' is not JSON"),
        ({"options": "[1]"}, "parameter `options`: '[1]' is not a JSON object"),
        ({"source": "nosuch"}, "unknown source 'nosuch'"),
    ],
)
def test_a_bad_parameter_fails_the_notebook_task_before_its_kernel_starts(
    dagbag, monkeypatch, bad, named
):
    from airflow.providers.papermill.operators.papermill import PapermillOperator
    from airflow.sdk.exceptions import AirflowFailException

    task = dagbag.dags["stock_batch_pipeline"].get_task("batch_producer")
    started = []
    monkeypatch.setattr(PapermillOperator, "execute", lambda self, ctx: started.append(ctx))
    monkeypatch.setattr(task, "parameters", {**PRODUCER_PARAMETERS, **bad})
    with pytest.raises(AirflowFailException, match="a retry cannot fix") as info:
        task.execute({})
    assert named in str(info.value) and not started
    monkeypatch.setattr(task, "parameters", PRODUCER_PARAMETERS)
    task.execute({})  # good parameters: the notebook runs
    assert started


def test_a_python_task_fails_at_once_on_an_error_no_retry_fixes(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    import stockpipe.maintenance as m
    import stockpipe.orchestration as orch
    from stockpipe.errors import ConfigError, NothingNewError, StackError

    def raising(exc):
        def stack_ready(settings, topics):
            raise exc

        return stack_ready

    check = orch.check_stack.function
    monkeypatch.setattr(orch, "stack_ready", raising(ConfigError("STOCKPIPE_X", "No x.")))
    with pytest.raises(
        AirflowFailException, match=r"check_stack failed .* fix:\nConfigError: No x"
    ):
        check(["t"])
    monkeypatch.setattr(orch, "stack_ready", raising(NothingNewError("nothing")))
    with pytest.raises(AirflowSkipException, match="check_stack: NothingNewError: nothing"):
        check(["t"])
    monkeypatch.setattr(orch, "stack_ready", raising(StackError("MinIO is down")))
    with pytest.raises(StackError):  # retried: the stack may come up
        check(["t"])

    context = {"params": {"tables": "nosuch", "retention_hours": 200}}
    monkeypatch.setattr("airflow.sdk.get_current_context", lambda: context)
    monkeypatch.setattr(m, "maintain", lambda *_a, **_k: m.resolve_tables(["nosuch"]))
    with pytest.raises(AirflowFailException, match="unknown Delta table 'nosuch'"):
        orch.maintain_lake.function()


# Timeouts, stuck jobs, retries beside a job (issue 25) -------------------------------------

#: The setting that bounds each notebook task, per DAG and task.
TIMEOUTS = {
    ("stock_batch_pipeline", "batch_producer"): "producer_timeout_s",
    ("stock_batch_pipeline", "spark_batch"): "batch_timeout_s",
    ("stock_batch_pipeline", "charts"): "charts_timeout_s",
    ("stock_batch_pipeline", "export"): "export_timeout_s",
    ("stock_stream_pipeline", "spark_streaming"): "stream_timeout_s",
    ("stock_stream_pipeline", "export"): "export_timeout_s",
    ("stock_stream_live", "stream_producer"): "live_timeout_s",
    ("stock_stream_live", "spark_streaming"): "live_timeout_s",
    ("stock_charts", "charts"): "charts_timeout_s",
}


def test_every_task_has_a_timeout_and_each_notebook_task_the_one_its_setting_gives(
    dagbag, settings
):
    from datetime import timedelta

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if task.task_id == "wait_for_new_records":
                continue  # a sensor in reschedule mode: bounded by its own timeout
            assert task.execution_timeout is not None, (dag.dag_id, task.task_id)
            field = TIMEOUTS.get((dag.dag_id, task.task_id))
            if field:
                assert task.timeout_setting == field
                expected = timedelta(seconds=getattr(settings, field))
                assert task.execution_timeout == expected, (dag.dag_id, task.task_id)
    assert len([k for k in TIMEOUTS if k[0] in dagbag.dags]) == 9
    # from settings (STOCKPIPE_BATCH_TIMEOUT_S=5400 above), not a constant
    batch = dagbag.dags["stock_batch_pipeline"].get_task("spark_batch")
    assert batch.execution_timeout == timedelta(seconds=5400)
    maintain = dagbag.dags["stock_lake_maintenance"].get_task("maintain_lake")
    assert maintain.execution_timeout == timedelta(seconds=settings.maintenance_timeout_s)


def test_a_job_task_outlasts_its_lease_wait_so_a_retry_fails_on_the_lease_not_the_clock(
    dagbag, settings
):
    """A retry that finds the lease held waits for it, then fails naming the holder;
    its timeout must leave room for that wait, and the streaming job must wait too."""
    from stockpipe.config import Settings

    for field in ("batch_timeout_s", "stream_timeout_s", "maintenance_timeout_s"):
        default = Settings.model_fields[field].default
        assert default > 2 * Settings.model_fields["lease_wait_s"].default, field
        assert getattr(settings, field) > settings.lease_wait_s, field
    for dag_id in ("stock_stream_pipeline", "stock_stream_live"):
        task = dagbag.dags[dag_id].get_task("spark_streaming")
        assert task.parameters["lease_wait_s"] == settings.lease_wait_s == 900


def test_streaming_durations_fit_in_their_tasks_timeouts(dagbag, settings):
    from stockpipe.orchestration import LIVE_JOB_EXTRA_S, STREAM_OVERHEAD_S

    scheduled = dagbag.dags["stock_stream_pipeline"].params.get_param("duration_s")
    assert scheduled.value == 1800
    longest = scheduled.schema["maximum"]
    assert longest + settings.lease_wait_s + STREAM_OVERHEAD_S <= settings.stream_timeout_s
    assert longest >= 1800
    live = dagbag.dags["stock_stream_live"]
    longest = live.params.get_param("duration_s").schema["maximum"]
    room = longest + LIVE_JOB_EXTRA_S + settings.lease_wait_s + STREAM_OVERHEAD_S
    assert room <= settings.live_timeout_s
    # the job runs LIVE_JOB_EXTRA_S past the producer
    job = live.get_task("spark_streaming").parameters["duration_s"]
    assert job == f"{{{{ params.duration_s + {LIVE_JOB_EXTRA_S} }}}}"


def _holder(pid: int = 4242, acquired: float = 0.0):
    from stockpipe.lease import Holder

    return Holder(
        holder="h1",
        job="spark batch job on stock.bars",
        host="box",
        pid=pid,
        acquired_at=datetime.fromtimestamp(acquired, UTC).isoformat(timespec="seconds"),
        expires_at=acquired + 10_000,
    )


def test_a_job_is_stuck_only_with_records_pending_a_lease_held_and_no_offsets_moved():
    from stockpipe.orchestration import BatchActivity, stuck_job

    t0 = 1_700_000_000.0
    held = (("raw/bars", _holder(acquired=t0)),)
    stall = 600.0

    def verdict(pending: int, holders=held, progress_at=None, now=t0 + 1000):
        return stuck_job(BatchActivity("stock.bars", pending, holders, progress_at), now, stall)

    # stuck: pending, held since t0, nothing moved since
    why = verdict(5)
    assert why is not None
    assert "5 record(s) on stock.bars are waiting" in why
    assert "raw/bars" in why and "pid 4242 on box" in why
    assert "STOCKPIPE_BATCH_STALL_S = 600" in why and "no commit has ever moved them" in why
    # nothing pending: nothing to be stuck on
    assert verdict(0) is None
    # no job holds the tables: the next job will take the records
    assert verdict(5, holders=()) is None
    # the holder took its lease less than stall_s ago: it may not have committed yet
    assert verdict(5, now=t0 + stall - 1) is None
    # a commit moved the offsets recently: the job makes progress
    assert verdict(5, progress_at=t0 + 900) is None
    # ... but long ago: stuck, and the message says when
    why = verdict(5, progress_at=t0 - 5000, now=t0 + 2000)
    assert why is not None and "the last commit that moved them was at 2023-11-14" in why
    assert "for 2000 s" in why  # counted from the lease, taken after that commit
    # several holders: counted from the latest one to take its lease
    two = (("processed/bars", _holder(acquired=t0)), ("raw/bars", _holder(5, t0 + 800)))
    assert verdict(5, holders=two, now=t0 + 1000) is None
    assert "pid 5 on box" in (verdict(5, holders=two, now=t0 + 1500) or "")


def test_the_sensor_fails_at_once_naming_a_stuck_job(monkeypatch, dagbag):

    from airflow.sdk.exceptions import AirflowFailException

    import stockpipe.orchestration as orch

    started = time.time() - 10_000  # long before STOCKPIPE_BATCH_STALL_S (default 1800)
    activity = orch.BatchActivity("stock.bars", 7, (("raw/bars", _holder(99, started)),))
    monkeypatch.setattr(orch, "batch_activity", lambda _s, _t: activity)
    sensor = orch.NewRecordsSensor(task_id="wait", topic="stock.bars", mode="poke", timeout=60)
    with pytest.raises(AirflowFailException, match=r"batch job is stuck: .*pid 99 on box"):
        sensor.execute({})
    # the same job, recently started: records pending, the sensor passes
    activity = orch.BatchActivity("stock.bars", 7, (("raw/bars", _holder(99, time.time())),))
    assert sensor.poke({}) is True


CHILD = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopped only by SIGKILL
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                              start_new_session=True)  # leaves the process group
print(grandchild.pid, flush=True)
time.sleep(300)
"""


def test_a_notebook_task_that_times_out_leaves_no_process_behind(dagbag, monkeypatch):
    """What a notebook starts (even a process that ignores SIGTERM, or one in a
    session of its own) is stopped when the task times out; the error names the setting."""
    import subprocess
    import sys

    import psutil
    from airflow.providers.papermill.operators.papermill import PapermillOperator
    from airflow.sdk.exceptions import AirflowTaskTimeout

    from stockpipe import notebooks

    task = dagbag.dags["stock_batch_pipeline"].get_task("spark_batch")
    started: list[int] = []

    def hangs_then_times_out(self, context):
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        started.extend([child.pid, int(child.stdout.readline())])
        raise AirflowTaskTimeout("Timeout, PID: 1")  # what Airflow's SIGALRM raises

    monkeypatch.setattr(PapermillOperator, "execute", hangs_then_times_out)
    monkeypatch.setattr(notebooks, "register_lake_io", lambda _s: None)
    with pytest.raises(AirflowTaskTimeout, match=r"spark_batch did not finish within 5400 s"):
        task.execute({})
    assert len(started) == 2
    assert not [p for p in started if psutil.pid_exists(p) and _running(p)]
    assert notebooks.RUN_ENV not in os.environ  # this process is no notebook run


def test_on_airflows_timeout_the_processes_stop_before_papermill_cleans_up(dagbag, monkeypatch):
    """Papermill's clean-up interrupts the kernel, whose job would then release its
    leases while its Spark driver may still commit: the processes are gone first."""
    import subprocess
    import sys

    from airflow.providers.papermill.operators.papermill import PapermillOperator
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    from stockpipe import notebooks

    task = dagbag.dags["stock_batch_pipeline"].get_task("spark_batch")
    seen: dict[str, bool] = {}

    def hangs(self, context):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        try:
            time.sleep(60)  # the kernel's cell, hung
        except AirflowTaskTimeout:  # where papermill's clean-up runs
            seen["running at clean-up"] = _running(child.pid)
            raise

    monkeypatch.setattr(PapermillOperator, "execute", hangs)
    monkeypatch.setattr(notebooks, "register_lake_io", lambda _s: None)
    t0 = time.monotonic()
    with pytest.raises(AirflowTaskTimeout, match="did not finish"), timeout(2):
        task.execute({})
    assert time.monotonic() - t0 < 30
    assert seen == {"running at clean-up": False}


def test_on_kill_stops_the_running_notebooks_processes(dagbag, monkeypatch):
    """SIGTERM of a task (marked failed, or its worker stopping) calls on_kill while
    the notebook runs: its processes stop, the task then fails."""
    import subprocess
    import sys

    from airflow.providers.papermill.operators.papermill import PapermillOperator

    from stockpipe import notebooks

    task = dagbag.dags["stock_stream_pipeline"].get_task("spark_streaming")
    seen: dict[str, object] = {}

    def runs_until_killed(self, context):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        seen["pid"] = child.pid
        self.on_kill()  # as Airflow's SIGTERM handler does, in the middle of the run
        seen["running after on_kill"] = _running(child.pid)
        raise RuntimeError("the kernel died")

    monkeypatch.setattr(PapermillOperator, "execute", runs_until_killed)
    monkeypatch.setattr(notebooks, "register_lake_io", lambda _s: None)
    with pytest.raises(RuntimeError, match="kernel died"):
        task.execute({})
    assert seen == {"pid": seen["pid"], "running after on_kill": False}


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
