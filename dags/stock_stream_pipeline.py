"""Streaming: ticks from Kafka to sliding-window aggregates in the lake.

Two DAGs share the streaming job's checkpoint, so its tasks share the
``stockpipe_streaming`` pool (one slot): never two runs of the job at once.

* ``stock_stream_pipeline`` (scheduled, ``STOCKPIPE_STREAM_SCHEDULE``):
  check_stack -> spark_streaming in available-now mode: processes whatever
  arrived since the last run, then stops -> export of the tick windows (and the
  quarantine counts) into the warehouse.
* ``stock_stream_live`` (manual): check_stack -> stream_producer and
  spark_streaming (continuous) side by side for ``duration_s`` seconds; the
  producer's ``source`` is synthetic ticks or live trades (``yahoo``).

Each job waits up to ``STOCKPIPE_LEASE_WAIT_S`` for the tables' leases (a killed
run's expire by themselves); the tasks' timeouts (``STOCKPIPE_STREAM_TIMEOUT_S``,
``STOCKPIPE_LIVE_TIMEOUT_S``) leave room for that wait and ``duration_s``.
"""

from __future__ import annotations

from airflow.sdk import DAG

from stockpipe import orchestration as orch
from stockpipe.config import get_settings

settings = get_settings()
TICK_WINDOWS = orch.lake_asset(settings, "tick_windows")
#: What the export after the available-now run loads into the warehouse.
EXPORTED = ("tick_windows", "quarantine_counts")

WINDOWING = {
    "window": "{{ params.window }}",
    "slide": "{{ params.slide }}",
    "watermark": "{{ params.watermark }}",
    "trigger": "{{ params.trigger }}",
    "replace_windows": "{{ params.replace_windows }}",
    # a retry after a timeout finds the killed job's leases until they expire
    "lease_wait_s": settings.lease_wait_s,
}

with DAG(
    dag_id="stock_stream_pipeline",
    description="ticks: Kafka -> Spark (available-now) -> processed/tick_windows",
    schedule=orch.schedule(settings.stream_schedule),
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.default_args(settings),
    params=orch.stream_params(settings, live=False),
    render_template_as_native_obj=True,
    tags=["stockpipe", "streaming"],
    doc_md=__doc__,
):
    check = orch.check_stack([settings.topic_ticks])
    stream = orch.NotebookOperator(
        notebook="spark_streaming",
        timeout="stream_timeout_s",
        pool=orch.STREAMING_POOL,
        outlets=[TICK_WINDOWS],
        parameters={
            **WINDOWING,
            "run_mode": "available-now",
            "duration_s": "{{ params.duration_s }}",
        },
    )
    export = orch.NotebookOperator(
        notebook="export",
        timeout="export_timeout_s",
        inlets=[TICK_WINDOWS],
        outlets=orch.warehouse_assets(settings, EXPORTED),
        parameters={"target": "", "tables": ",".join(EXPORTED)},
    )
    check >> stream >> export

with DAG(
    dag_id="stock_stream_live",
    description="ticks: producer and continuous streaming job side by side",
    schedule=None,
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**orch.default_args(settings), "retries": 0},  # a live session is not redone
    params=orch.stream_params(settings, live=True),
    render_template_as_native_obj=True,
    tags=["stockpipe", "streaming"],
    doc_md=__doc__,
):
    check = orch.check_stack([settings.topic_ticks])
    produce = orch.NotebookOperator(
        notebook="stream_producer",
        timeout="live_timeout_s",
        parameters={
            "source": "{{ params.source }}",
            "symbols": "{{ params.symbols }}",
            "rate": "{{ params.rate }}",
            "duration_s": "{{ params.duration_s }}",
            "seed": "{{ params.seed }}",
        },
    )
    stream = orch.NotebookOperator(
        notebook="spark_streaming",
        timeout="live_timeout_s",
        pool=orch.STREAMING_POOL,
        outlets=[TICK_WINDOWS],
        parameters={
            **WINDOWING,
            "run_mode": "continuous",
            "archive_trigger": "{{ params.archive_trigger }}",
            # Spark needs a while to start: the job outlives the producer by a minute
            "duration_s": "{{ params.duration_s + 60 }}",  # orch.LIVE_JOB_EXTRA_S
        },
    )
    check >> [produce, stream]
