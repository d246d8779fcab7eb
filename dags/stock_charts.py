"""The market report, refreshed whenever the streaming job lands new tick windows.

The batch pipeline charts its own runs (its last task); this DAG is scheduled on
the ``tick_windows`` asset, so a run of either streaming DAG updates the report.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from stockpipe import orchestration as orch
from stockpipe.config import get_settings

settings = get_settings()
PROCESSED_BARS = orch.lake_asset(settings, "processed_bars")
TICK_WINDOWS = orch.lake_asset(settings, "tick_windows")
REPORTS = orch.lake_asset(settings, "reports")

with DAG(
    dag_id="stock_charts",
    description="HTML market report from processed bars and tick windows",
    schedule=[TICK_WINDOWS],
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.default_args(settings),
    params={
        "symbols": Param("", type="string", description="empty: every symbol in the lake"),
        "start": Param("", type="string", description="ISO date; empty: the first bar"),
        "end": Param("", type="string", description="ISO date; empty: the last bar"),
        "report_dir": Param(str(orch.REPORTS_DIR), type="string"),
    },
    tags=["stockpipe", "charts"],
    doc_md=__doc__,
):
    orch.NotebookOperator(
        notebook="charts",
        timeout="charts_timeout_s",
        inlets=[PROCESSED_BARS, TICK_WINDOWS],
        outlets=[REPORTS],
        parameters={
            "symbols": "{{ params.symbols }}",
            "start": "{{ params.start }}",
            "end": "{{ params.end }}",
            "output_dir": "{{ params.report_dir }}",
        },
    )
