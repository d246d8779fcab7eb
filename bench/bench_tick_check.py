"""The streaming quarantine query with and without its fast path, on the same ticks.

The quarantine query of the streaming job must find the bad ticks among every record
of a micro-batch. The general path parses each record's JSON and applies every rule;
the fast path (``tick_transforms.needs_checking``) first drops the ticks whose text
has the producer's canonical shape, which a regular expression proves valid, so only
the rest are parsed. This bench times both on one Spark session over the same
records (Spark ``local[2]``, no services), interleaved, and prints their ratio: the
fast path is kept only while that ratio says it pays.

    python bench/bench_tick_check.py                  # 1,000,000 ticks, 0.1 % bad
    python bench/bench_tick_check.py --ticks 500000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import save
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stockpipe.config import load_settings
from stockpipe.spark.session import get_spark
from stockpipe.spark.tick_transforms import (
    needs_checking,
    parse_ticks,
    quarantined_ticks,
    validate_ticks,
)
from stockpipe.ticks import TickGenerator, TickSpec


def kafka_records(spark: SparkSession, ticks: int, bad_every: int) -> DataFrame:
    """``ticks`` producer ticks as Kafka records, one in ``bad_every`` made invalid."""
    start_ms = int(time.time() * 1000) - 3_600_000
    spec = TickSpec(symbols=("AAPL", "MSFT", "GOOGL", "AMZN"), seed=7, start_ms=start_ms)
    gen = TickGenerator(spec)
    values = [v for _, v in gen.take(ticks).messages()]
    for i in range(0, len(values), bad_every):
        values[i] = values[i].replace(b'"size":', b'"size":-')
    rows = [(b"k", v, "stock.ticks", i % 3, i) for i, v in enumerate(values)]
    schema = "key BINARY, value BINARY, topic STRING, partition INT, offset LONG"
    df = spark.createDataFrame(rows, schema).withColumn("timestamp", F.current_timestamp())
    return df.repartition(4).localCheckpoint()


def timed_count(df: DataFrame) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = df.count()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--bad-every", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    settings = load_settings(spark_master="local[2]", spark_driver_memory="4g")
    spark = get_spark(settings, "bench-tick-check")
    records = kafka_records(spark, args.ticks, args.bad_every)
    queries = {
        "general": quarantined_ticks(validate_ticks(parse_ticks(records))),
        "fast": quarantined_ticks(validate_ticks(parse_ticks(needs_checking(records)))),
    }
    expected = len(range(0, args.ticks, args.bad_every))
    for q in queries.values():  # warm-up: code generated and compiled once
        assert timed_count(q)[1] == expected
    times: dict[str, list[float]] = {name: [] for name in queries}
    for _ in range(args.repeats):
        for name, q in queries.items():
            seconds, n = timed_count(q)
            assert n == expected, (name, n, expected)
            times[name].append(round(seconds, 3))
            print(f"  {name}: {seconds:.2f} s ({n} quarantined)", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratio = median["general"] / median["fast"]
    print(
        f"quarantine query over {args.ticks:,} ticks: general {median['general']:.2f} s, "
        f"fast path {median['fast']:.2f} s (median of {args.repeats}): "
        f"the fast path is {ratio:.2f}x as fast"
    )
    save(
        "tick_check",
        {
            "ticks": args.ticks,
            "bad_every": args.bad_every,
            "seconds": times,
            "median_s": median,
            "general_over_fast": round(ratio, 2),
        },
    )
    spark.stop()


if __name__ == "__main__":
    main()
