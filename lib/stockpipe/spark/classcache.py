"""A class-data-sharing archive for the Spark driver JVM: faster starts.

A new driver JVM loads and verifies some 20,000 classes (Spark, Kafka client,
S3A and the AWS SDK) before its first micro-batch, seconds of the session start
and of the first query (docs/performance.md). HotSpot can map them from
an archive instead (AppCDS). The archive is made once per environment by a
short training run (``python -m stockpipe.spark.classcache``, called by
``stockpipe setup``) that exercises what the jobs use, with no service needed.

By default it lives in the virtual environment, next to the pyspark jars it
describes (stockpipe.spark.jvm, which the jobs use to map it): HotSpot checks the
class path and JDK it was made with and silently ignores it when they differ, so a
stale archive costs nothing but the speed-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from stockpipe.config import Settings
from stockpipe.spark.jvm import archive_path


def ensure_archive(settings: Settings, *, timeout: float = 600) -> Path | None:
    """Make the archive (``spark_class_archive``) if missing: one training run, about a
    minute; its path or None.

    Never fatal: without it Spark starts as it would anyway.
    """
    path = archive_path(settings)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    print("  spark class archive: training run (one time per environment) ...", flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "STOCKPIPE_CDS_DUMP": str(partial)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "stockpipe.spark.classcache"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"  spark class archive: skipped (training took over {timeout:.0f} s)")
        return None
    if out.returncode != 0 or not partial.is_file():
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        print("  spark class archive: skipped (training failed: " + " / ".join(tail) + ")")
        partial.unlink(missing_ok=True)
        return None
    partial.rename(path)
    size = path.stat().st_size / 1e6
    print(f"  spark class archive: ready ({size:.0f} MB, {time.perf_counter() - t0:.0f} s)")
    return path


def train(settings: Settings, workdir: Path, dump: Path) -> None:
    """Run, on tiny local data, the code paths of the batch and streaming jobs.

    The JVM writes the classes it loaded to ``dump`` when it exits.
    """
    from pyspark.sql import functions as F

    from stockpipe.schemas import PARTITION_COLUMNS, bar_messages
    from stockpipe.sources.synthetic import synthetic_bars
    from stockpipe.spark import tick_transforms as TT
    from stockpipe.spark import transforms as T
    from stockpipe.spark.records import raw_from_kafka
    from stockpipe.spark.session import driver_session, spark_conf
    from stockpipe.ticks import TickGenerator, TickSpec

    options = spark_conf(settings, class_archive=False)["spark.driver.extraJavaOptions"]
    spark = driver_session(
        settings,
        "stockpipe-class-archive",
        **{"spark.driver.extraJavaOptions": f"{options} -XX:ArchiveClassesAtExit={dump}"},
    )
    # the records' Kafka time: now, as the bars' ingested_at is (a later one is quarantined)
    now = datetime.now(UTC)
    # the library's own messages: the jobs' usual paths, not only the error ones
    bars = synthetic_bars(3, "2024-01-01", "2024-03-31", "1d", seed=1, batch_id="cds")
    messages = [*bar_messages(bars), (b"k", b"not json"), (b"k", b'{"symbol": 1}')]
    rows = [(k, v, "stock.bars", 0, i, now, 0) for i, (k, v) in enumerate(messages)]
    kafka = spark.createDataFrame(
        rows,
        "key binary, value binary, topic string, partition int, offset long, "
        "timestamp timestamp, timestamp_type int",
    )
    flagged = T.slim_flagged(T.flag_bars(T.parse_bars(raw_from_kafka(kafka)), now)).persist()
    valid, quarantine = T.split_flagged(flagged, now)
    quarantine.groupBy("reason").count().collect()
    raw_from_kafka(kafka).write.mode("overwrite").partitionBy("ingest_date").parquet(
        str(workdir / "raw")
    )
    merged = T.add_derived(T.dedupe_bars(valid.select(*T.VALID_COLUMNS)))
    T.for_processed_write(merged).write.mode("overwrite").partitionBy(*PARTITION_COLUMNS).parquet(
        str(workdir / "processed")
    )
    spark.read.parquet(str(workdir / "processed")).count()
    flagged.unpersist()

    # the streaming job's plan: ticks from files shaped like Kafka records
    ticks = workdir / "ticks"
    ticks.mkdir()
    start_ms = int(now.timestamp() * 1000)
    spec = TickSpec(symbols=("AAPL", "MSFT"), rate=100, seed=1, start_ms=start_ms)
    batch = TickGenerator(spec).take(400)
    (ticks / "0.txt").write_bytes(b"\n".join(v for _k, v in batch.messages()))
    records = spark.readStream.text(str(ticks)).select(
        F.lit(b"AAPL").alias("key"),
        F.col("value").cast("binary").alias("value"),
        F.lit("stock.ticks").alias("topic"),
        F.lit(0).alias("partition"),
        F.lit(0).cast("long").alias("offset"),
        F.lit(now).alias("timestamp"),
    )
    windows = TT.window_aggregates(
        TT.valid_ticks(TT.validate_ticks(TT.parse_ticks(records))),
        window="1 minute",
        slide="15 seconds",
        watermark="30 seconds",
    )
    query = (
        windows.writeStream.format("parquet")
        .outputMode("append")
        .option("path", str(workdir / "windows"))
        .option("checkpointLocation", str(workdir / "checkpoint"))
        .partitionBy("date")
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    TT.needs_checking(
        spark.read.text(str(ticks)).select(
            F.col("value").cast("binary").alias("value"), F.lit(now).alias("timestamp")
        )
    ).count()

    try:
        _load_connectors(spark)
    except Exception as exc:  # what was loaded so far still goes into the archive
        print(f"connector classes not all loaded: {exc}", file=sys.stderr)
    spark.stop()


def _load_connectors(spark) -> None:
    """Load the S3A and Kafka source classes; no request is made."""
    jvm = spark.sparkContext._jvm
    s3 = jvm.org.apache.hadoop.fs.Path("s3a://stockpipe-class-archive/")
    s3.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    kafka_source = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", "127.0.0.1:9")
        .option("subscribe", "none")
        .load()
    )
    assert "value" in kafka_source.columns


def main() -> int:
    from stockpipe.config import load_settings

    dump = os.environ.get("STOCKPIPE_CDS_DUMP")
    if not dump:
        print("set STOCKPIPE_CDS_DUMP to the archive to write", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="stockpipe-cds-") as tmp:
        train(load_settings(), Path(tmp), Path(dump))
    return 0


if __name__ == "__main__":
    sys.exit(main())
