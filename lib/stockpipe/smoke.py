"""A smoke pipeline: Kafka -> Spark -> a Delta table in MinIO -> read back with deltalake.

Proves the local stack end to end in well under a minute.
"""

from __future__ import annotations

import json
import time
import uuid

from stockpipe.config import Settings
from stockpipe.kafka import ConfirmedProducer, ensure_topics
from stockpipe.lake import storage_options


def run_smoke(settings: Settings, records: int = 20, log=print) -> list[dict]:
    run = uuid.uuid4().hex[:8]
    topic = f"stockpipe.smoke.{run}"
    ensure_topics(settings, [topic], partitions=1)
    with ConfirmedProducer(settings, topic) as producer:
        for i in range(records):
            value = {"run": run, "i": i, "price": round(100 + i * 0.25, 2)}
            producer.send(f"k{i % 3}".encode(), json.dumps(value).encode())
    log(f"kafka: {producer.report.sent} records confirmed on topic {topic}")

    from stockpipe.spark.session import get_spark

    t0 = time.perf_counter()
    spark = get_spark(settings, "stockpipe-smoke")
    df = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "offset")
    )
    target = f"{settings.bucket}/_smoke/{run}"
    df.write.format("delta").mode("overwrite").save(f"s3a://{target}")
    log(f"spark: wrote {df.count()} rows to s3a://{target} ({time.perf_counter() - t0:.1f} s)")

    from deltalake import DeltaTable

    rows = DeltaTable(f"s3://{target}", storage_options=storage_options(settings))
    out = sorted(rows.to_pyarrow_table().to_pylist(), key=lambda r: r["offset"])
    log(f"deltalake: read {len(out)} rows back; first: {out[0] if out else None}")
    return out
