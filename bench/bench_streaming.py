"""Streaming benchmark: sustained tick rate and freshness of window results.

Producer, Kafka, Spark and MinIO all run on this machine. For each input rate
(ascending) a fresh topic and lake get a live producer (event time = wall clock)
and the streaming job in continuous mode, each in its own process. The producer
runs at the rate for ``--live-warmup`` seconds (60 by default: the JVM compiles
the hot code and the first, large batches catch up; their freshness is reported
apart) and then for the measured ``--duration`` (3 minutes by default). Every
second the benchmark samples:

* the backlog: records in Kafka minus the offsets the windows query committed
  (the end offsets of its newest micro-batch, from the progress the job prints
  as JSON lines with ``--progress json``);
* new versions of the windows' Delta table: each window row in the files they
  add is *fresh* by ``seen - (window_end + watermark)``: the wall time from the
  moment the watermark (event time = wall time here) passes the window's end to
  the moment the row is readable from MinIO through the table's log;
* CPU and memory of each process (producer, Spark driver + JVM, Kafka, MinIO).

A rate is sustained when the producer holds it (within 5 %) and the backlog
does not grow over the second half of the run (least-squares slope below 2 %
of the rate) and ends below one trigger interval plus 10 s of input.
Targets: >= 20,000 ticks/s sustained; freshness p95 <= trigger + 10 s.

    python bench/bench_streaming.py                         # 5k, 10k, 20k, 30k ticks/s, 3 min each
    python bench/bench_streaming.py --rates 2000,5000 --duration 45   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
from common import isolated_stack, save

from stockpipe.kafka import end_offsets, ensure_topics
from stockpipe.lake import filesystem
from stockpipe.stack.minio_access import provision_bucket
from stockpipe.tables import open_table
from stockpipe.times import to_ms

SYMBOLS = "AAPL,MSFT,GOOGL,AMZN,NVDA,TSLA,META,SPY"


def _env(settings) -> dict[str, str]:
    env = {**os.environ, **settings.to_env()}
    env["STOCKPIPE_ENV_FILE"] = str(Path(settings.state_dir) / "no.env")
    return env


class Progress:
    """Reads the job's progress lines (JSON, one per micro-batch) from its stdout.

    Keeps, per query, the Kafka records its newest batch had read up to: the
    offsets it committed, since a batch's progress is reported after its commit.
    Every line also goes to ``log`` (a file, or nowhere), so the pipe never fills.
    """

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log
        self.committed: dict[str, int] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="job-progress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.stream:
            if self.log is not None:
                self.log.write(line)
                self.log.flush()
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            total = sum(o for parts in row["end_offsets"].values() for o in parts.values())
            with self.lock:
                name = row["query_name"]
                self.committed[name] = max(self.committed.get(name, 0), total)

    def offsets(self, query: str) -> int | None:
        """Records the query has committed (the topic is new: offsets start at 0)."""
        with self.lock:
            return self.committed.get(query)


class Freshness:
    """Watches the windows' Delta table; times each window row as it becomes readable.

    Polls on its own thread every ``interval`` seconds, so a row is timed within
    that much of its commit (the once-a-second sampling loop would add up to a
    second or two to every figure).
    """

    def __init__(self, settings, delay_ms: int, interval: float = 0.25) -> None:
        self.settings, self.fs, self.delay_ms = settings, filesystem(settings), delay_ms
        self.interval = interval
        self.table = None
        self.version: int | None = None
        self.seen: set[str] = set()
        self.samples: list[float] = []
        self.at: list[float] = []  # time.monotonic() when each sample was taken
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="freshness", daemon=True)

    def start(self) -> None:
        self.poll()  # rows already committed (warm-up ticks) are not timed
        self.take()
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def take(self) -> tuple[list[float], list[float]]:
        """The samples so far (and when each was taken); the next ones start afresh."""
        with self.lock:
            out = (self.samples, self.at)
            self.samples, self.at = [], []
        return out

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        if self.table is None:
            self.table = open_table(self.settings, "tick_windows")
            if self.table is None:
                return
        else:
            self.table.update_incremental()
        if self.table.version() == self.version:
            return
        self.version = self.table.version()
        now, mono = time.time(), time.monotonic()
        files = set(self.table.file_uris())
        for uri in sorted(files - self.seen):
            path = uri.split("://", 1)[-1]
            ends = pq.read_table(path, columns=["window_end"], filesystem=self.fs)
            with self.lock:
                for end in ends.column(0).to_pylist():
                    self.samples.append(now - (end.timestamp() + self.delay_ms / 1000))
                    self.at.append(mono)
        self.seen = files


class Usage:
    """CPU seconds and peak memory of named process trees."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {n: psutil.Process(p) for n, p in pids.items()}
        self.start = {n: self._cpu(p) for n, p in self.procs.items()}
        self.last = dict(self.start)  # a process that exits keeps its last reading
        self.peak_rss = dict.fromkeys(self.procs, 0)
        self.t0 = time.monotonic()

    @staticmethod
    def _tree(p: psutil.Process) -> list[psutil.Process]:
        try:
            return [p, *p.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu(self, p: psutil.Process) -> float:
        total = 0.0
        for q in self._tree(p):
            try:
                t = q.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def sample(self) -> None:
        for n, p in self.procs.items():
            rss = 0
            for q in self._tree(p):
                with contextlib.suppress(psutil.Error):
                    rss += q.memory_info().rss
            self.peak_rss[n] = max(self.peak_rss[n], rss)
            self.last[n] = max(self.last[n], self._cpu(p))

    def summary(self) -> dict[str, dict[str, float]]:
        wall = time.monotonic() - self.t0
        return {
            n: {
                "cpu_percent": round(100 * (self.last[n] - self.start[n]) / wall, 1),
                "peak_rss_mb": round(self.peak_rss[n] / 2**20, 1),
            }
            for n in self.procs
        }


def _pct(values, q: float) -> float | None:
    """The q-th percentile, rounded; None when nothing was timed."""
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def _slope(series: list[tuple[float, int]]) -> float:
    """Least-squares slope (records/s) of a backlog series over its second half."""
    b = np.array(series, dtype=float)
    half = b[b[:, 0] >= b[-1, 0] / 2] if len(b) else b
    return float(np.polyfit(half[:, 0], half[:, 1], 1)[0]) if len(half) > 2 else float("nan")


def run_rate(base_settings, stack, rate: int, args) -> dict:
    tag = f"r{rate}"
    s = base_settings.model_copy(
        update={"bucket": f"bench-{tag}", "topic_ticks": f"bench.ticks.{tag}"}
    )
    provision_bucket(s)
    ensure_topics(s, [s.topic_ticks], partitions=3)
    delay_ms = to_ms(args.watermark)
    trigger_s = to_ms(args.trigger) / 1000
    job_log = open(f"{args.job_log}.{rate}", "w") if args.job_log else None  # noqa: SIM115
    job = subprocess.Popen(
        [sys.executable, "-m", "stockpipe.cli", "stream", "--mode", "continuous",
         "--name", "bench", "--window", args.window, "--slide", args.slide,
         "--watermark", args.watermark, "--trigger", args.trigger,
         *(["--archive-trigger", args.archive_trigger] if args.archive_trigger else []),
         "--duration", str(args.live_warmup + args.duration + 120), "--state-partitions", "2",
         "--progress", "json",
         *(["--checkpoint", f"{args.checkpoint}/{tag}"] if args.checkpoint else [])],
        env=_env(s), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    progress = Progress(job.stdout, job_log)
    # Warm up: a few ticks, and wait until the job has committed its first batch.
    subprocess.run(
        [sys.executable, "-m", "stockpipe.cli", "ticks", "--symbols", SYMBOLS, "--rate", "100",
         "--max-ticks", "200", "--json"],
        env=_env(s), check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + args.warmup
    while progress.offsets("bench") is None:
        if time.monotonic() > deadline or job.poll() is not None:
            os.killpg(job.pid, signal.SIGKILL)
            raise RuntimeError("the streaming job did not commit a first batch in time")
        time.sleep(1.0)
    producer = subprocess.Popen(
        [sys.executable, "-m", "stockpipe.cli", "ticks", "--symbols", SYMBOLS, "--rate", str(rate),
         "--duration", str(args.live_warmup + args.duration), "--seed", "1",
         "--out-of-order", "0.02",
         "--out-of-order-max-ms", "5000", "--json"],
        env=_env(s), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    pids = {
        "producer": producer.pid,
        "spark (driver + JVM)": job.pid,
        **{f"{st.name}": st.pid for st in stack.status() if st.pid},
    }
    usage = Usage(pids)
    fresh = Freshness(s, delay_ms)
    fresh.start()
    backlog: list[tuple[float, int]] = []
    archived = 0
    archive_series: list[tuple[float, int]] = []
    t0 = time.monotonic()
    measuring = args.live_warmup <= 0
    startup: list[float] = []  # freshness during the warm-up at full rate (JIT, first batches)
    try:
        while producer.poll() is None:
            time.sleep(1.0)
            usage.sample()
            if not measuring and time.monotonic() - t0 >= args.live_warmup:
                startup, _ = fresh.take()
                backlog.clear()
                archive_series.clear()
                usage = Usage(pids)
                t0, measuring = time.monotonic(), True
                continue
            produced = sum(end_offsets(s, s.topic_ticks).values())
            backlog.append((time.monotonic() - t0, produced - (progress.offsets("bench") or 0)))
            archived = produced - (progress.offsets("bench_archive") or 0)
            archive_series.append((backlog[-1][0], archived))
            if job.poll() is not None:
                raise RuntimeError(f"streaming job exited with {job.returncode}")
        report = json.loads(producer.stdout.read().strip().splitlines()[-1])
        # Drain: give the job two triggers plus the watermark to close what it can.
        time.sleep(2 * trigger_s + delay_ms / 1000 + 10)
        resources = usage.summary()
    finally:
        fresh.stop()
        if producer.poll() is None:
            producer.send_signal(signal.SIGTERM)
            producer.wait(60)
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
    b = np.array(backlog, dtype=float)
    slope = _slope(backlog)
    final_backlog = float(np.mean(b[-5:, 1]))
    samples, at = fresh.take()
    f = np.array(samples)
    # the second half: steady state, after the start-up backlog (JIT, first batches)
    f2 = f[np.array(at) - t0 >= b[-1, 0] / 2] if len(f) else f
    result = {
        "target_rate": rate,
        "producer_rate": report["rate"],
        "sent": report["sent"],
        "backlog_slope_per_s": round(slope, 1),
        "backlog_final": round(final_backlog),
        "backlog_max": int(b[:, 1].max()),
        "windows_timed": len(f),
        "freshness_p50_s": _pct(f, 50),
        "freshness_p95_s": _pct(f, 95),
        "live_warmup_s": args.live_warmup,
        "warmup_windows_timed": len(startup),
        "warmup_freshness_p95_s": _pct(startup, 95),
        "second_half_windows_timed": len(f2),
        "second_half_freshness_p50_s": _pct(f2, 50),
        "second_half_freshness_p95_s": _pct(f2, 95),
        # raw and quarantine run in the lower-priority pool: how far behind they ended
        "archive_backlog_at_end": archived,
        "archive_backlog_slope_per_s": round(_slope(archive_series), 1),
        "processes": resources,
    }
    result["producer_held_rate"] = report["rate"] >= 0.95 * rate
    result["sustained"] = bool(
        result["producer_held_rate"]
        and slope < 0.02 * rate
        and final_backlog < rate * (trigger_s + 10)
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000,30000")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds per rate")
    parser.add_argument(
        "--warmup", type=float, default=600.0, help="at most this long for the first batch"
    )
    parser.add_argument(
        "--live-warmup",
        type=float,
        default=60.0,
        help="seconds at full rate before the measured duration (JIT, first large batches)",
    )
    parser.add_argument("--window", default="1 minute")
    parser.add_argument("--slide", default="15 seconds")
    parser.add_argument("--watermark", default="30 seconds")
    parser.add_argument("--trigger", default="5 seconds")
    parser.add_argument(
        "--archive-trigger", default=None, help="raw and quarantine interval (job default)"
    )
    parser.add_argument(
        "--checkpoint", default=None, help="a local checkpoint root instead of the lake's"
    )
    parser.add_argument("--job-log", default=None, help="keep the job's output in <path>.<rate>")
    parser.add_argument("--keep-going", action="store_true", help="try higher rates after a miss")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    results: dict = {
        "duration_s": args.duration,
        "window": args.window,
        "slide": args.slide,
        "watermark": args.watermark,
        "trigger": args.trigger,
        "target_ticks_per_s": 20_000,
        "target_freshness_p95_s": to_ms(args.trigger) / 1000 + 10,
        "runs": [],
    }
    with isolated_stack(spark_master="local[2]") as (settings, stack):
        for rate in rates:
            print(f"rate {rate} ticks/s for {args.duration:.0f} s ...", flush=True)
            r = run_rate(settings, stack, rate, args)
            results["runs"].append(r)
            print(
                f"  producer {r['producer_rate']:.0f}/s, backlog slope {r['backlog_slope_per_s']}"
                f"/s, final {r['backlog_final']}, freshness p50 {r['freshness_p50_s']} s "
                f"p95 {r['freshness_p95_s']} s over {r['windows_timed']} windows (second half "
                f"p50 {r['second_half_freshness_p50_s']} s, p95 {r['second_half_freshness_p95_s']}"
                f" s); archive behind at the end by {r['archive_backlog_at_end']} (slope "
                f"{r['archive_backlog_slope_per_s']}/s): "
                f"{'sustained' if r['sustained'] else 'NOT sustained'}",
                flush=True,
            )
            for name, u in r["processes"].items():
                print(
                    f"    {name:<22} cpu {u['cpu_percent']:>6.1f} %  "
                    f"peak rss {u['peak_rss_mb']:>8.1f} MB"
                )
            if not r["sustained"] and not args.keep_going:
                break
    ok = [r for r in results["runs"] if r["sustained"]]
    best = max(ok, key=lambda r: r["target_rate"]) if ok else None
    results["highest_sustained_ticks_per_s"] = best["target_rate"] if best else 0
    results["freshness_p50_s"] = best["freshness_p50_s"] if best else None
    results["freshness_p95_s"] = best["freshness_p95_s"] if best else None
    print(
        f"highest sustained rate: {results['highest_sustained_ticks_per_s']} ticks/s "
        f"(target 20,000); freshness p50 {results['freshness_p50_s']} s, "
        f"p95 {results['freshness_p95_s']} s (target <= {results['target_freshness_p95_s']} s)"
    )
    save("streaming", results)


if __name__ == "__main__":
    main()
