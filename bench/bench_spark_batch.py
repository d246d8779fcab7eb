"""Spark batch benchmark: 500 symbols x 10 years of daily bars (~1.26 M records) into Delta.

The stack's Spark Connect server starts first (its start reported apart) and runs
one small job on a lake of its own (a server that has served jobs: warm). The
records are produced to Kafka (not timed); then `stockpipe batch` runs as a new
process, a client of the warm server: Kafka -> raw + quarantine + processed, timed
as a whole process (client start included). In the same run a single-process pandas
implementation of the processed-zone transform (JSON parse, validation,
de-duplication, derived columns) runs on the same records: the ratio of the two is
the figure to watch. Then one day (500 bars) is added to histories of 10, 20 and 40
years, each in a lake of its own, and `stockpipe batch` is timed for that day and
for a run with nothing new.
Targets: ratio <= 1.5; incremental day <= 3 s wall, within 20 % across history
lengths; nothing new <= 1 s wall.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from common import isolated_stack, save

from stockpipe.ingest import produce_bars
from stockpipe.kafka import ensure_topics, read_all
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.stack.minio_access import provision_bucket

INTERVALS = {"1d", "1h", "5m", "1m"}


def pandas_processed(values: list[bytes], now: pd.Timestamp) -> pd.DataFrame:
    """The processed-zone transform in plain pandas, one process."""
    df = pd.DataFrame.from_records(json.loads(v) for v in values)
    df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce")
    df["ingested_at"] = pd.to_datetime(df["ingested_at"], utc=True, errors="coerce")
    prices = df[["open", "high", "low", "close"]]
    bad = (
        df[["symbol", "interval", "ts", "open", "high", "low", "close", "volume"]]
        .isna()
        .any(axis=1)
        | (prices <= 0).any(axis=1)
        | (df["high"] < prices[["open", "close", "low"]].max(axis=1))
        | (df["low"] > prices[["open", "close"]].min(axis=1))
        | (df["volume"] < 0)
        | ~df["interval"].isin(INTERVALS)
        | (df["ts"] > now)
    )
    df = df[~bad].sort_values("ingested_at", kind="stable")
    df = df.drop_duplicates(["symbol", "interval", "ts"], keep="last")
    df = df.sort_values(["symbol", "interval", "ts"]).reset_index(drop=True)
    price = df["adj_close"].fillna(df["close"])
    keys = [df["symbol"], df["interval"]]
    prev = price.groupby(keys).shift(1)
    df["return"] = price / prev - 1
    df["log_return"] = np.log(price / prev)
    g = price.groupby(keys)
    df["sma_20"] = g.rolling(20).mean().reset_index(level=[0, 1], drop=True)
    df["sma_50"] = g.rolling(50).mean().reset_index(level=[0, 1], drop=True)
    df["volatility_20"] = (
        df["log_return"].groupby(keys).rolling(20).std().reset_index(level=[0, 1], drop=True)
    )
    df["range_pct"] = (df["high"] - df["low"]) / df["close"] * 100
    df["year"] = df["ts"].dt.year
    return df


def run_job_in_fresh_process(env: dict[str, str]) -> tuple[float, float, str]:
    """Wall time of `stockpipe batch` (JVM and Spark start included), the job's own
    time from its report, and the report."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.cli", "batch"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    steps = [ln for ln in out.stderr.splitlines() if "stockpipe.spark.batch" in ln]
    print("\n".join(s for s in steps if "INFO" in s), flush=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    summary = out.stdout.strip().splitlines()[-1]
    job = re.search(r"([0-9.]+) s\)?$", summary)
    return wall, float(job.group(1)) if job else wall, summary


def lake_env(settings, name: str) -> tuple[object, dict[str, str]]:
    s = settings.model_copy(update={"bucket": f"bench-{name}", "topic_bars": f"bench.{name}"})
    provision_bucket(s)
    ensure_topics(s, [s.topic_bars], partitions=3)
    env = {**os.environ, **s.to_env(), "STOCKPIPE_ENV_FILE": str(s.state_dir / "no.env")}
    return s, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--histories", default="10,20,40", help="years of history, incremental")
    args = parser.parse_args()
    results: dict = {"targets": {"ratio": 1.5, "incremental_wall_s": 3, "noop_wall_s": 1}}
    end = pd.Timestamp("2025-11-03")  # history in the past
    day = end + pd.offsets.BDay(1)
    with isolated_stack(
        spark_master="local[2]", spark_driver_memory="4g", spark_shuffle_partitions=4
    ) as (base, stack):
        results["server_start_s"] = round(stack.started["spark-connect"], 2)
        print(f"Spark Connect server started in {results['server_start_s']:.1f} s", flush=True)
        warm, warm_env = lake_env(base, "warmup")
        sample = synthetic_bars(20, end - pd.DateOffset(years=1), end, "1d", seed=1, batch_id="w")
        produce_bars(warm, sample, warm.topic_bars, progress=False)
        for _ in range(2):  # a server that has served jobs: classes loaded, code compiled
            wall, _job, summary = run_job_in_fresh_process(warm_env)
            produce_bars(
                warm, sample.assign(close=sample.close * 1.01), warm.topic_bars, progress=False
            )
        results["warmup_s"] = round(wall, 2)
        print(f"warm-up job: {wall:.1f} s -- {summary}", flush=True)
        settings, env = lake_env(base, "full")
        bars = synthetic_bars(
            args.symbols, end - pd.DateOffset(years=args.years), end, "1d", seed=3, batch_id="b"
        )
        results["records"] = len(bars)
        print(f"{len(bars)} bars, {args.symbols} symbols x {args.years} years", flush=True)
        assert produce_bars(settings, bars, settings.topic_bars, progress=False).sent == len(bars)
        wall, job, summary = run_job_in_fresh_process(env)
        results.update(spark_full_s=round(wall, 2), spark_full_job_s=job)
        results["spark_full_summary"] = summary
        print(f"spark (full, incl. start): {wall:.1f} s -- {summary}", flush=True)

        values = [v for _, _, _, v in read_all(settings, settings.topic_bars)]
        t0 = time.perf_counter()
        ref = pandas_processed(values, pd.Timestamp.now(tz="UTC"))
        results["pandas_s"] = round(time.perf_counter() - t0, 2)
        results["pandas_rows"] = len(ref)
        print(f"pandas (single process): {results['pandas_s']:.1f} s, {len(ref)} rows", flush=True)
        del values, ref, bars

        new = synthetic_bars(
            args.symbols, day, day + pd.Timedelta(days=1), "1d", seed=3, batch_id="incr"
        )
        results["incremental_records"] = len(new)
        incremental = {}
        for years in [int(y) for y in args.histories.split(",")]:
            if years == args.years:
                s, e = settings, env
            else:
                s, e = lake_env(base, f"h{years}")
                history = synthetic_bars(
                    args.symbols, end - pd.DateOffset(years=years), end, "1d", seed=3, batch_id="h"
                )
                produce_bars(s, history, s.topic_bars, progress=False)
                wall, job, summary = run_job_in_fresh_process(e)
                print(f"history of {years} years loaded in {job:.1f} s -- {summary}", flush=True)
                del history
            produce_bars(s, new, s.topic_bars, progress=False)
            wall, job, summary = run_job_in_fresh_process(e)
            noop_wall, _, _ = run_job_in_fresh_process(e)
            incremental[years] = {
                "job_s": job,
                "wall_s": round(wall, 2),
                "noop_s": round(noop_wall, 2),
                "summary": summary,
            }
            print(
                f"+1 day on {years} years: job {job:.1f} s (wall {wall:.1f} s); "
                f"nothing new: {noop_wall:.1f} s -- {summary}",
                flush=True,
            )
    results["incremental"] = incremental
    results["ratio_spark_to_pandas"] = round(results["spark_full_s"] / results["pandas_s"], 2)
    walls = [v["wall_s"] for v in incremental.values()]
    results["incremental_spread"] = round(max(walls) / min(walls) - 1, 3)
    print(
        f"ratio spark/pandas: {results['ratio_spark_to_pandas']}; incremental day "
        f"{min(walls):.1f}-{max(walls):.1f} s wall (spread {results['incremental_spread']:.0%}); "
        f"nothing new {max(v['noop_s'] for v in incremental.values()):.1f} s"
    )
    save("spark_batch", results)


if __name__ == "__main__":
    main()
