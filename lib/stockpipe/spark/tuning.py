"""Every performance knob of the Spark jobs, derived from the settings' cores and memory.

A knob here changes how fast a job runs, never what it writes; rules (time zone, table
format, timestamp type) stay with the code they govern. Each knob says why in a line;
what it was measured to do is in docs/performance.md ("Tuning knobs").
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stockpipe.config import Settings
from stockpipe.errors import ParameterError
from stockpipe.schemas import DERIVED_COLUMNS, PRICE_COLUMNS

MIB = 1 << 20

#: Fair-scheduler pools: (name, mode within the pool, weight, share of the cores
#: guaranteed while it has tasks). The streaming windows and the batch job's check and
#: merge are what users wait for: they take the cores first; the archiving writes fill
#: what they leave idle, the raw and quarantine queries sharing theirs fairly.
POOLS: tuple[tuple[str, str, int, float], ...] = (
    ("stream_windows", "FIFO", 8, 1.0),
    ("stream_archive", "FAIR", 1, 0.0),
    ("batch_main", "FIFO", 8, 1.0),
    ("batch_raw", "FIFO", 1, 0.0),
)

#: JVM flag of driver and executors: HotSpot leaves methods over 8,000 bytecodes to the
#: interpreter, and Spark's generated code for the wide validation stages is that large.
COMPILE_HUGE_METHODS = "-XX:-DontCompileHugeMethods"

#: Parquet settings of the batch job's writes (Delta's writer takes them from the
#: session). Raw values and processed numbers are nearly all distinct: a dictionary is
#: built, then abandoned; no reader uses min/max of the record text.
NO_DICTIONARY = ("value", "value_b64", *PRICE_COLUMNS, "adj_close", "volume", *DERIVED_COLUMNS)


def task_slots(settings: Settings) -> int:
    """Tasks the jobs can run at once: ``spark_cores``, else what the master says
    (``local[N]``, the local cluster's workers × cores), else this machine's CPUs."""
    if settings.spark_cores > 0:
        return settings.spark_cores
    master = settings.spark_master_url
    if m := re.fullmatch(r"local\[(\d+)(?:,\d+)?\]", master):
        return int(m.group(1))
    if settings.spark_cluster and master.startswith("spark://"):
        return settings.spark_workers * settings.spark_worker_cores
    return os.cpu_count() or 1


def memory_mb(text: str, setting: str = "spark memory") -> int:
    """A JVM memory size ("2g", "768m", "512k") in MiB; ``setting`` names it in an error."""
    m = re.fullmatch(r"(\d+)([kmgt]?)b?", text.strip().lower())
    if not m:
        raise ParameterError(setting, text, "a memory size", use="e.g. 2g or 768m")
    factor = {"k": 1 / 1024, "": 1 / MIB, "m": 1, "g": 1024, "t": 1024 * 1024}[m.group(2)]
    return max(1, int(int(m.group(1)) * factor))


@dataclass(frozen=True)
class Tuning:
    """The knobs for one deployment: how many task slots, how much memory per task host."""

    cores: int
    #: Memory of a JVM that runs tasks: the driver in local mode, else an executor
    task_memory_mb: int
    shuffle_partitions: int

    @classmethod
    def of(cls, settings: Settings) -> Tuning:
        cores = task_slots(settings)
        local = settings.spark_master_url.startswith("local") and not settings.spark_remote
        memory = settings.spark_driver_memory if local else settings.spark_executor_memory
        return cls(
            cores=cores,
            task_memory_mb=memory_mb(
                memory, "spark_driver_memory" if local else "spark_executor_memory"
            ),
            # two tasks per core: one uneven task no longer leaves a core idle
            shuffle_partitions=settings.spark_shuffle_partitions or 2 * cores,
        )

    # --- the session ---------------------------------------------------------------------
    def jvm_options(self) -> list[str]:
        return [COMPILE_HUGE_METHODS]

    def session_conf(self) -> dict[str, str]:
        """Spark settings of every session."""
        return {
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            # tasks that replay a Delta log: Delta's default of 50 is for big clusters
            "spark.databricks.delta.snapshotPartitions": str(self.shuffle_partitions),
            "spark.scheduler.mode": "FAIR",
            "spark.scheduler.allocation.file": str(self.pools_file()),
            "spark.sql.adaptive.enabled": "true",
            # a partitioned write keeps a file open per partition value instead of
            # sorting every row by partition first (the raw zone's one ingest date)
            "spark.sql.maxConcurrentOutputFileWriters": "8",
            # upper() through the JVM, not ICU, whose case mapper loads dictionaries on
            # first use; symbols are ASCII
            "spark.sql.icu.caseMappings.enabled": "false",
        }

    def pools_file(self) -> Path:
        """The fair-scheduler allocation file for these cores (written once per content)."""
        pools = "".join(
            f'  <pool name="{name}"><schedulingMode>{mode}</schedulingMode>'
            f"<weight>{weight}</weight><minShare>{round(share * self.cores)}</minShare></pool>\n"
            for name, mode, weight, share in POOLS
        )
        xml = f'<?xml version="1.0"?>\n<allocations>\n{pools}</allocations>\n'
        digest = hashlib.sha256(xml.encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"stockpipe-pools-{os.getuid()}-{digest}.xml"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(xml)
            tmp.replace(path)
        return path

    # --- Kafka ---------------------------------------------------------------------------
    def kafka_fetch(self) -> dict[str, str]:
        """Consumer fetch sizes: Kafka's 1 MB per partition made reading a backlog the
        slowest step; a sixteenth of the task memory bounds the buffers (8-64 MiB)."""
        total = min(64, max(8, self.task_memory_mb // 16))
        return {
            # a read of a bounded range asks for records it knows are there: Kafka's
            # 500 ms wait for more data was most of a small slice's read time
            "kafka.fetch.max.wait.ms": "10",
            "kafka.max.partition.fetch.bytes": str(total // 2 * MIB),
            "kafka.fetch.max.bytes": str(total * MIB),
            "kafka.max.poll.records": "20000",
        }

    #: Kafka read tasks per core: one task per topic partition left a core idle behind
    #: the last task of each read
    read_tasks_per_core: int = 3
    #: A read task gets at least this many records: a small batch keeps one per partition
    min_records_per_read_task: int = 50_000

    def read_tasks(self, records: int, partitions: int) -> int | None:
        """How many tasks read ``records`` from ``partitions`` Kafka partitions (Spark's
        ``minPartitions``); None for one per partition, Spark's own choice."""
        tasks = min(
            self.read_tasks_per_core * self.cores, records // self.min_records_per_read_task
        )
        return tasks if tasks > partitions else None

    # --- the batch job -------------------------------------------------------------------
    def batch_conf(self) -> dict[str, str]:
        """Spark SQL settings of the batch job's queries."""
        return {
            **{f"parquet.enable.dictionary#{c}": "false" for c in NO_DICTIONARY},
            "parquet.column.statistics.enabled#value": "false",
            # a cache read a few times within seconds: compressing it costs more than it saves
            "spark.sql.inMemoryColumnarStorage.compressed": "false",
            # one task per shuffle partition: AQE's fewer, uneven ones left a core idle
            "spark.sql.adaptive.coalescePartitions.enabled": "false",
        }

    # --- the streaming job ---------------------------------------------------------------
    def streaming_conf(self) -> dict[str, str]:
        """Spark settings of the streaming job's session."""
        return {
            # each batch uploads only the changes of its RocksDB window state
            "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
            # Delta's sink rebuilds a table's state every batch (for the query's last
            # transaction): one task does it sooner than several on these small tables
            "spark.databricks.delta.snapshotPartitions": "1",
        }
