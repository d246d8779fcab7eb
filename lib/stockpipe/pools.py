"""The Airflow pools the DAGs share; the stack's Airflow runner creates them.

Here, on the runtime side, because the DAGs (stockpipe.orchestration) name them and
the runtime never imports the dev stack (stockpipe.stack.airflow imports these).
"""

from __future__ import annotations

#: One slot: the streaming DAGs share the job's checkpoint, so one run at a time.
STREAMING_POOL = "stockpipe_streaming"
#: One slot: the batch job's writes and lake maintenance never run side by side.
#: The tables' leases enforce one writer anyway; the pool spares a task the wait.
LAKE_WRITER_POOL = "stockpipe_lake_writer"
#: The pools the DAGs use, with their descriptions (each has one slot).
POOLS = {
    STREAMING_POOL: "one streaming job at a time",
    LAKE_WRITER_POOL: "one writer of the bars tables at a time (batch job, lake maintenance)",
}
