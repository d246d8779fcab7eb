"""Daily batch pipeline: bars from a source through Kafka and Spark into the lake, then charts.

check_stack -> batch_producer -> wait_for_new_records -> spark_batch -> export, charts

Each run fetches its own data interval (``@daily``: the previous day, UTC) unless
the ``start``/``end``/``full_history`` params say otherwise. Executed notebooks go
to ``s3://<bucket>/notebooks/stock_batch_pipeline/<run_id>/``. Settings (schedule,
source, symbols) come from ``STOCKPIPE_BATCH_*``; credentials from the environment.
A day without bars (weekend, market holiday) skips the run's tasks instead of
failing them. Each notebook task has a timeout (``STOCKPIPE_*_TIMEOUT_S``), after
which its kernel and Spark are stopped; the sensor fails at once if the job holding
the bars tables is stuck (``STOCKPIPE_BATCH_STALL_S``).
"""

from __future__ import annotations

from airflow.sdk import DAG

from stockpipe import orchestration as orch
from stockpipe.config import get_settings

settings = get_settings()
PROCESSED_BARS = orch.lake_asset(settings, "processed_bars")
REPORTS = orch.lake_asset(settings, "reports")
#: What the export after the job loads into the warehouse (an asset per table).
EXPORTED = ("bars", "quarantine_counts")

with DAG(
    dag_id="stock_batch_pipeline",
    description="bars: source -> Kafka -> Spark -> processed/ -> charts",
    schedule=orch.schedule(settings.batch_schedule),
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.default_args(settings),
    params=orch.batch_params(settings),
    user_defined_macros=orch.MACROS,
    tags=["stockpipe", "batch"],
    doc_md=__doc__,
):
    check = orch.check_stack([settings.topic_bars])
    produce = orch.NotebookOperator(
        notebook="batch_producer",
        timeout="producer_timeout_s",
        parameters={
            "source": "{{ params.source }}",
            "symbols": "{{ params.symbols }}",
            "start": "{{ window_start(params, data_interval_start) }}",
            "end": "{{ window_end(params, data_interval_end) }}",
            "interval": "{{ params.interval }}",
            "path": "{{ params.path }}",
            "options": "{{ params.options }}",
            # a scheduled day without bars (weekend, holiday) skips the run's tasks
            "allow_empty": True,
        },
    )
    wait = orch.NewRecordsSensor(task_id="wait_for_new_records", retries=0)
    # the lake writer pool: never beside lake maintenance (stock_lake_maintenance)
    process = orch.NotebookOperator(
        notebook="spark_batch",
        timeout="batch_timeout_s",
        outlets=[PROCESSED_BARS],
        pool=orch.LAKE_WRITER_POOL,
    )
    charts = orch.NotebookOperator(
        notebook="charts",
        timeout="charts_timeout_s",
        inlets=[PROCESSED_BARS],
        outlets=[REPORTS],
        parameters={
            "symbols": "{{ params.symbols }}",
            "start": "{{ window_start(params, None) }}",
            "end": "{{ window_end(params, None) }}",
            "output_dir": "{{ params.report_dir }}",
        },
    )

    export = orch.NotebookOperator(
        notebook="export",
        timeout="export_timeout_s",
        inlets=[PROCESSED_BARS],
        outlets=orch.warehouse_assets(settings, EXPORTED),
        parameters={"target": "", "tables": ",".join(EXPORTED)},
    )

    check >> produce >> wait >> process >> [export, charts]
