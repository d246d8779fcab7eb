"""Lake maintenance: OPTIMIZE (compaction, processed/bars Z-ordered by symbol) and VACUUM.

check_stack -> maintain_lake

Every Delta table that exists is compacted, then vacuumed with a retention of at
least 7 days, so a reader of any version of the last week still finds its files.
Each table is done under its lease, and ``maintain_lake`` runs in the lake writer
pool (one slot, shared with the batch job's ``spark_batch``), so it never runs
beside the batch job's writes. Schedule: ``STOCKPIPE_MAINTENANCE_SCHEDULE``
(default ``@daily``); timeout: ``STOCKPIPE_MAINTENANCE_TIMEOUT_S``. The same work
by hand: ``stockpipe lake maintain``.
"""

from __future__ import annotations

from airflow.sdk import DAG

from stockpipe import orchestration as orch
from stockpipe.config import get_settings

settings = get_settings()

with DAG(
    dag_id="stock_lake_maintenance",
    description="OPTIMIZE + VACUUM of the lake's Delta tables",
    schedule=orch.schedule(settings.maintenance_schedule),
    start_date=orch.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=orch.default_args(settings),
    params=orch.maintenance_params(),
    tags=["stockpipe", "maintenance"],
    doc_md=__doc__,
):
    maintain = orch.maintain_lake.override(
        execution_timeout=orch.task_timeout(settings, "maintenance_timeout_s")
    )
    orch.check_stack([]) >> maintain()
