"""Warehouse export benchmark: the 1.3 M-bar processed table into PostgreSQL.

500 symbols x 10 years of daily bars go through Kafka and the Spark batch job
(not timed here: bench_spark_batch.py measures that). Then, timed:

* a full export of ``processed/bars`` (snapshot read with delta-rs, ADBC bulk load
  into a staging table, one INSERT into the warehouse table, the version recorded):
  rows per second;
* one new day (500 bars) through the batch job, then its incremental export
  (the change data feed of the new commit only);
* an export with nothing new.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pandas as pd
from common import isolated_stack, save

from stockpipe.ingest import produce_bars
from stockpipe.kafka import ensure_topics
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.warehouse.export import export


def batch_job(env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stockpipe.cli", "batch"], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    print("  batch job:", out.stdout.strip().splitlines()[-1], flush=True)


def timed_export(settings) -> tuple[float, object]:
    t0 = time.perf_counter()
    report = export(settings, "bars")
    return time.perf_counter() - t0, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    args = parser.parse_args()
    end = pd.Timestamp("2025-11-03")
    day = end + pd.offsets.BDay(1)
    results: dict = {"symbols": args.symbols, "years": args.years}
    with isolated_stack(spark_master="local[2]", spark_driver_memory="4g") as (base, _stack):
        s = base.model_copy(update={"bucket": "bench-wh", "topic_bars": "bench.wh"})
        provision_bucket(s)
        ensure_topics(s, [s.topic_bars], partitions=3)
        env = {**os.environ, **s.to_env(), "STOCKPIPE_ENV_FILE": str(s.state_dir / "no.env")}
        bars = synthetic_bars(
            args.symbols, end - pd.DateOffset(years=args.years), end, "1d", seed=3, batch_id="b"
        )
        print(f"{len(bars)} bars, {args.symbols} symbols x {args.years} years", flush=True)
        produce_bars(s, bars, s.topic_bars, progress=False)
        del bars
        batch_job(env)

        seconds, report = timed_export(s)
        [full] = report.sources
        rows = report.counts["bars"]
        results.update(
            full_export_s=round(seconds, 2),
            full_rows=rows,
            full_rows_per_s=round(rows / seconds),
            full_mode=full.mode,
            full_read_s=round(full.read_s, 2),
            full_stage_s=round(full.stage_s, 2),
            full_apply_s=round(full.apply_s, 2),
        )
        print(f"full export: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s")
        print(
            f"  read {full.read_s:.1f} s, bulk load {full.stage_s:.1f} s, "
            f"insert + commit {full.apply_s:.1f} s"
        )

        new = synthetic_bars(
            args.symbols, day, day + pd.Timedelta(days=1), "1d", seed=3, batch_id="incr"
        )
        produce_bars(s, new, s.topic_bars, progress=False)
        batch_job(env)
        seconds, report = timed_export(s)
        [inc] = report.sources
        results.update(
            incremental_day_s=round(seconds, 2),
            incremental_rows=inc.rows_loaded,
            incremental_mode=inc.mode,
            incremental_read_s=round(inc.read_s, 2),
        )
        print(f"incremental day: {inc.rows_loaded} rows ({inc.mode}) in {seconds:.2f} s")

        seconds, report = timed_export(s)
        results["noop_s"] = round(seconds, 2)
        print(f"nothing new: {seconds:.2f} s ({report.sources[0].mode})")
    save("warehouse", results)


if __name__ == "__main__":
    main()
