"""Scale-out benchmark: the Spark batch job on local[2] vs a standalone cluster with 1
and 2 workers, and producer throughput against 1 broker vs 3 brokers (replication 3).

Spark: 500 synthetic symbols x 10 years of daily bars (~1.3 M records) are put in
Kafka once; each mode then runs ``python -m stockpipe.cli batch`` in a fresh
process (JVM start included) into a lake of its own. The processed rows of every
mode are checked equal. Producer: 1,000,000 bars with acks=all and idempotence.

    python bench/bench_scale_out.py
    python bench/bench_scale_out.py --symbols 100 --bars 200000   # a quick look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from common import isolated_stack, save

from stockpipe.ingest import produce_bars
from stockpipe.reader import read_bars
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.stack.manager import Stack
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.stack.services import free_port
from stockpipe.stack.spark_cluster import spark_cluster_services


def _batch_job(settings) -> tuple[float, str]:
    env = {**os.environ, **settings.to_env()}
    env["STOCKPIPE_ENV_FILE"] = str(Path(settings.state_dir) / "no.env")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.cli", "batch"], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - t0, out.stdout.strip().splitlines()[-1]


def spark_modes(args, results: dict) -> None:
    end = pd.Timestamp("2025-11-03")
    bars = synthetic_bars(
        args.symbols, end - pd.DateOffset(years=args.years), end, "1d", seed=3, batch_id="b"
    )
    results["spark_records"] = len(bars)
    print(f"spark: {len(bars)} bars, {args.symbols} symbols x {args.years} years", flush=True)
    with isolated_stack(spark_shuffle_partitions=4) as (settings, _stack):
        produce_bars(settings, bars, settings.topic_bars, progress=False)
        frames = {}
        modes = [("local[2]", 0), ("standalone, 1 worker", 1), ("standalone, 2 workers", 2)]
        for label, workers in modes:
            s = settings.model_copy(
                update={
                    "bucket": f"bench-w{workers}",
                    "spark_master": "local[2]",
                    "spark_cluster": workers > 0,
                    "spark_master_port": free_port(),
                    "spark_master_ui_port": free_port(),
                    "spark_workers": workers,
                    # the machine's 2 cores, split between the workers
                    "spark_worker_cores": 2 // max(workers, 1),
                    "spark_worker_memory": "4g" if workers == 1 else "2g",
                    "spark_executor_memory": "3g" if workers == 1 else "1500m",
                    "spark_driver_memory": "4g" if workers == 0 else "2g",
                }
            )
            provision_bucket(s)
            cluster = Stack(s, spark_cluster_services(s)) if workers else None
            if cluster:
                cluster.up(log=lambda _m: None)
            try:
                seconds, summary = _batch_job(s)
            finally:
                if cluster:
                    cluster.down(log=lambda _m: None)
            results[f"spark_{label}_s"] = round(seconds, 1)
            print(f"  {label:<22} {seconds:6.1f} s  -- {summary}", flush=True)
            frames[label] = read_bars(s)
        first = frames[modes[0][0]]
        for frame in frames.values():
            pd.testing.assert_frame_equal(first, frame, check_exact=True)
        results["spark_modes_equal_rows"] = True
        print("  every mode wrote exactly the same processed rows", flush=True)


def producer_brokers(args, results: dict) -> None:
    bars = synthetic_bars(
        max(1, args.bars // 2500),
        pd.Timestamp("2015-01-01"),
        pd.Timestamp("2025-01-01"),
        "1d",
        seed=4,
        batch_id="p",
    ).iloc[: args.bars]
    results["producer_bars"] = len(bars)
    for nodes in (1, 3):
        with isolated_stack(kafka_nodes=nodes, kafka_heap="512m") as (s, _stack):
            t0 = time.perf_counter()
            rep = produce_bars(s, bars, s.topic_bars, progress=False)
            seconds = time.perf_counter() - t0
            assert rep.sent == len(bars) and rep.failed == 0
            rate = len(bars) / seconds
            results[f"producer_{nodes}_broker_bars_per_s"] = round(rate)
            print(
                f"producer, {nodes} broker(s), replication {s.replication_factor}: "
                f"{rate:,.0f} bars/s ({seconds:.1f} s)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--bars", type=int, default=1_000_000, help="for the producer runs")
    parser.add_argument("--skip-spark", action="store_true")
    args = parser.parse_args()
    results: dict = {}
    producer_brokers(args, results)
    if not args.skip_spark:
        spark_modes(args, results)
    save("scale_out", results)


if __name__ == "__main__":
    main()
