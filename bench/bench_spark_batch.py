"""Spark batch benchmark: 500 symbols x 10 years of daily bars (~1.26 M records).

The records are produced to Kafka first (not timed); then one process starts
Spark and runs the job Kafka -> raw + processed (timed, including Spark start).
In the same run a single-process pandas implementation of the processed-zone
transform (JSON parse, validation, de-duplication, derived columns) runs on the
same records, and finally an incremental run adds one day to the history.
Target: <= 60 s wall on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from common import isolated_stack, save

from stockpipe.ingest import produce_bars
from stockpipe.kafka import read_all
from stockpipe.sources.synthetic import synthetic_bars

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


def run_job_in_fresh_process(env: dict[str, str]) -> tuple[float, str]:
    """Wall time of `python -m stockpipe.spark.batch` (JVM and Spark start included)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.spark.batch"], env=env, capture_output=True, text=True
    )
    steps = [
        ln for ln in out.stderr.splitlines() if "stockpipe.spark.batch" in ln or "__main__" in ln
    ]
    print("\n".join(s for s in steps if "INFO" in s), flush=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - t0, out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()
    results: dict = {"target_s": 60}
    end = pd.Timestamp("2025-11-03")  # history in the past: future bars would be quarantined
    start = end - pd.DateOffset(years=args.years)
    bars = synthetic_bars(args.symbols, start, end, "1d", seed=3, batch_id="bench")
    results["records"] = len(bars)
    print(f"{len(bars)} bars, {args.symbols} symbols x {args.years} years", flush=True)
    with isolated_stack(
        spark_master="local[2]", spark_driver_memory="4g", spark_shuffle_partitions=4
    ) as (settings, _stack):
        rep = produce_bars(settings, bars, settings.topic_bars, progress=False)
        assert rep.sent == len(bars)
        env = {**os.environ, **settings.to_env()}
        env["STOCKPIPE_ENV_FILE"] = str(settings.state_dir / "no.env")

        results["spark_full_s"], summary = run_job_in_fresh_process(env)
        results["spark_full_summary"] = summary
        print(
            f"spark (full, incl. start): {results['spark_full_s']:.1f} s -- {summary}", flush=True
        )

        values = [v for _, _, _, v in read_all(settings, settings.topic_bars)]
        t0 = time.perf_counter()
        ref = pandas_processed(values, pd.Timestamp.now(tz="UTC"))
        results["pandas_s"] = round(time.perf_counter() - t0, 2)
        results["pandas_rows"] = len(ref)
        print(f"pandas (single process): {results['pandas_s']:.1f} s, {len(ref)} rows", flush=True)

        day = end + pd.offsets.BDay(1)
        new = synthetic_bars(
            args.symbols, day, day + pd.Timedelta(days=1), "1d", seed=3, batch_id="bench-incr"
        )
        produce_bars(settings, new, settings.topic_bars, progress=False)
        results["incremental_records"] = len(new)
        results["spark_incremental_s"], summary = run_job_in_fresh_process(env)
        results["spark_incremental_summary"] = summary
        print(
            f"spark (incremental +1 day, incl. start): {results['spark_incremental_s']:.1f} s "
            f"-- {summary}",
            flush=True,
        )
        results["spark_noop_s"], summary = run_job_in_fresh_process(env)
        print(f"spark (nothing new): {results['spark_noop_s']:.1f} s -- {summary}")
    results["ratio_spark_to_pandas"] = round(results["spark_full_s"] / results["pandas_s"], 2)
    print(f"ratio spark/pandas: {results['ratio_spark_to_pandas']}")
    save("spark_batch", results)


if __name__ == "__main__":
    main()
