"""Batch producer benchmark: 1,000,000 synthetic daily bars to Kafka with acks=all.

Target >= 50,000 bars/s. Kafka's own ceiling is measured in the same run with the
Java producer perf tool from the broker jars (same record size, acks=all,
idempotence, lz4), and kafka-python on a smaller sample for comparison.
"""

from __future__ import annotations

import argparse
import re
import subprocess

from common import isolated_stack, save, timed

from stockpipe.ingest import produce_bars
from stockpipe.kafka import ensure_topics
from stockpipe.schemas import bar_messages
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.stack import install


def java_ceiling(settings, topic: str, records: int, size: int) -> float:
    cmd = [
        install.require_tool("java"),
        "-Xmx512m",
        "-cp",
        install.kafka_classpath(settings.cache_dir),
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={settings.bootstrap_servers}",
        "acks=all",
        "enable.idempotence=true",
        "compression.type=lz4",
        "linger.ms=20",
        "batch.size=1000000",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    last = [ln for ln in out.splitlines() if "records sent" in ln][-1]
    return float(re.search(r"([\d.]+) records/sec", last).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    args = parser.parse_args()
    results: dict = {"bars": args.bars, "target_bars_per_s": 50_000}
    n_symbols = 400
    years = args.bars / n_symbols / 252
    bars = synthetic_bars(
        n_symbols, "2000-01-03", f"{2000 + int(years) + 1}-12-31", "1d", seed=1, batch_id="bench"
    ).head(args.bars)
    results["bars"] = len(bars)
    size = int(sum(len(v) for _, v in bar_messages(bars.head(10_000))) / 10_000)
    results["avg_record_bytes"] = size
    with isolated_stack() as (settings, _stack):
        ensure_topics(settings, ["bench.bars", "bench.java", "bench.kp"], partitions=3)
        with timed(results, "confluent_s"):
            rep = produce_bars(settings, bars, "bench.bars", progress=False)
        assert rep.sent == len(bars) and rep.failed == 0, rep
        results["confluent_bars_per_s"] = round(len(bars) / results["confluent_s"])
        sample = bars.head(200_000)
        with timed(results, "kafka_python_200k_s"):
            rep = produce_bars(settings, sample, "bench.kp", backend="kafka-python", progress=False)
        assert rep.sent == len(sample)
        results["kafka_python_bars_per_s"] = round(len(sample) / results["kafka_python_200k_s"])
        results["kafka_java_ceiling_records_per_s"] = round(
            java_ceiling(settings, "bench.java", len(bars), size)
        )
    results["ratio_confluent_to_ceiling"] = round(
        results["confluent_bars_per_s"] / results["kafka_java_ceiling_records_per_s"], 3
    )
    for k in (
        "confluent_bars_per_s",
        "kafka_python_bars_per_s",
        "kafka_java_ceiling_records_per_s",
        "ratio_confluent_to_ceiling",
    ):
        print(f"{k}: {results[k]}")
    save("producer", results)


if __name__ == "__main__":
    main()
