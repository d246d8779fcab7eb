"""`make demo`: the whole platform on the shipped sample data, then a summary.

1. the local stack (Kafka, MinIO) is up, Airflow's database is ready;
2. a live streaming session starts in the background: the tick producer and the
   streaming job side by side for a few minutes, as the ``stock_stream_live`` DAG
   runs them (``dags test`` runs tasks one after the other, so the demo starts
   the two notebooks itself, the same way the notebook tasks do);
3. meanwhile the batch pipeline DAG runs end to end (``airflow dags test``:
   in-process, no scheduler) on the sample bars: producer, sensor, Spark batch
   job, charts; then the demo waits for the streaming session to end;
4. the charts DAG turns bars and tick windows into the HTML report, and the
   export loads bars, tick windows and quarantine counts into the warehouse
   (PostgreSQL; the batch DAG's export task has loaded the bars already);
5. the summary: rows per zone and per warehouse table, quarantine reasons,
   executed notebooks and the report (in MinIO and local copies), and how to
   open the UIs.

Warm (setup done, stack up) it needs no network.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stockpipe.config import PROJECT_ROOT, Settings, child_environ
from stockpipe.errors import DemoError
from stockpipe.notebooks import REPORTS_DIR, notebook_path, notebook_url
from stockpipe.stack.airflow import (
    DagTestResult,
    airflow_env,
    dags_test,
    ensure_db,
    password_file,
)

DEMO_SYMBOLS = "MSFT,GOOG"  # the daily series in data_samples/ (EURUSD is hourly)
STREAM_SYMBOLS = "AAPL,MSFT,GOOGL,AMZN"

Log = Callable[[str], None]


@dataclass
class DemoResult:
    """What the demo did, for the summary and the benchmark."""

    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    runs: list[DagTestResult] = field(default_factory=list)
    notebooks: dict[str, str] = field(default_factory=dict)  # s3 url -> local copy
    live_run_id: str | None = None
    report_s3: str | None = None
    report_local: Path | None = None
    #: rows per warehouse table after the demo's export
    warehouse: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


_TASK_LINE = re.compile(r"\[DAG TEST\] (starting|end task) task_id=(\S+)")


def _progress(log: Log) -> Callable[[str], None]:
    """Turn `airflow dags test` output into one line per task start and end."""
    started: dict[str, float] = {}

    def on_line(line: str) -> None:
        m = _TASK_LINE.search(line)
        if m:
            what, task = m.groups()
            if what == "starting":
                started[task] = time.perf_counter()
                log(f"    {task}: running")
            else:
                took = time.perf_counter() - started.get(task, time.perf_counter())
                log(f"    {task}: finished ({took:.0f} s)")
        elif "Task failed with exception" in line:
            log("    a task failed; its error follows in the log")

    return on_line


def _dag_run(
    settings: Settings, dag_id: str, conf: dict, log: Log, logs_dir: Path
) -> DagTestResult:
    result = dags_test(
        settings,
        dag_id,
        conf,
        log_file=logs_dir / f"{dag_id}.log",
        on_line=_progress(log),
    )
    states = ", ".join(f"{t.task_id} {t.state}" for t in result.tasks)
    log(f"    run {result.run_id}: {result.state} in {result.seconds:.0f} s ({states})")
    if not result.ok:
        raise DemoError(
            f"{dag_id} did not succeed (failed: {', '.join(result.failed_tasks()) or '?'}); "
            f"the full output, with the failing cell's error, is in {result.log_file}"
        )
    return result


# The live streaming session ----------------------------------------------------------------


class LiveSession:
    """Producer and streaming job side by side, each a papermill run in its own process.

    Runs in the background while the batch pipeline works (they share nothing
    but the stack), so the demo pays for the slower of the two, not both.
    """

    dag_id = "stock_stream_live"

    def __init__(
        self,
        settings: Settings,
        *,
        duration_s: float,
        logs_dir: Path,
        symbols: str = STREAM_SYMBOLS,
        rate: int = 500,
        source: str = "synthetic",
    ) -> None:
        self.settings = settings
        self.run_id = "demo__" + datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
        self.jobs = {
            "spark_streaming": {
                "run_mode": "continuous",
                # counted from the job's own start (after Spark's), which comes after
                # the producer's: a few micro-batches more take in the last ticks
                "duration_s": int(duration_s + 20),
            },
            "stream_producer": {
                "source": source,
                "symbols": symbols,
                "rate": rate,
                "duration_s": int(duration_s),
                "seed": 42,
            },
        }
        self.logs_dir = logs_dir
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, log: Log) -> None:
        env = child_environ(self.settings, airflow_env(self.settings))
        for task_id, params in self.jobs.items():
            url = notebook_url(self.settings, self.dag_id, self.run_id, task_id)
            out = self.logs_dir / f"{self.dag_id}.{task_id}.log"
            with open(out, "w") as fh:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "stockpipe.notebooks", task_id, url, json.dumps(params)],
                    env=env,
                    cwd=PROJECT_ROOT,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            self.procs[task_id] = (proc, out)
            log(f"    {task_id}: started ({url})")

    def wait(self, log: Log) -> None:
        failed = []
        for task_id, (proc, out) in self.procs.items():
            proc.wait()
            log(f"    {task_id}: {'finished' if proc.returncode == 0 else 'FAILED'}")
            if proc.returncode != 0:
                failed.append(f"{task_id} (log: {out})")
        if failed:
            raise DemoError(f"the live streaming session failed: {', '.join(failed)}")

    def stop(self) -> None:
        """On an error elsewhere: end both runs (the producer flushes, the job stops cleanly)."""
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, _ in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


# Summary -----------------------------------------------------------------------------------


def _copy_notebooks(settings: Settings, dag_id: str, run_id: str) -> dict[str, str]:
    """Local copies of a run's executed notebooks under reports/notebooks/."""
    from stockpipe.lake import filesystem

    fs = filesystem(settings)
    prefix = f"{settings.bucket}/notebooks/{dag_id}/{run_id}"
    copies = {}
    for key in sorted(fs.find(prefix)):
        local = REPORTS_DIR / "notebooks" / dag_id / run_id / Path(key).name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(fs.cat(key))
        copies[f"s3://{key}"] = str(local)
    return copies


def _latest_report(settings: Settings) -> tuple[str | None, Path | None]:
    from stockpipe.lake import filesystem, zone

    fs = filesystem(settings)
    files = [f for f in fs.find(zone(settings, "reports")) if f.endswith(".html")]
    s3 = f"s3://{max(files)}" if files else None  # names hold a UTC timestamp
    local = sorted(REPORTS_DIR.glob("*/market-report-*.html"))
    return s3, (local[-1] if local else None)


def quarantine_reasons(settings: Settings) -> list[tuple[str, str, int]]:
    """(kind, reason, rows) for quarantined bars and ticks, most frequent first."""
    from collections import Counter

    from stockpipe.reader import read_quarantine

    out = []
    for kind in ("bars", "ticks"):
        q = read_quarantine(settings, kind)
        counts: Counter = Counter()
        if len(q) and "reason" in q:
            for reasons in q["reason"].dropna():
                counts.update(str(reasons).split("; "))
        out += [(kind, reason, n) for reason, n in counts.most_common()]
    return out


def late_ticks_dropped(settings: Settings) -> int:
    """Ticks the streaming job dropped as too late (its metrics table)."""
    from stockpipe.reader import read_stream_metrics

    metrics = read_stream_metrics(settings)
    return int(metrics["late_rows_dropped"].sum()) if len(metrics) else 0


def summary(settings: Settings, result: DemoResult) -> list[str]:
    """The closing text of the demo."""
    from stockpipe.reader import zone_counts

    lines = ["", "=" * 72, f"stockpipe demo finished in {result.seconds / 60:.1f} min", ""]
    lines.append("Rows in each zone of the lake:")
    for zone_name, rows in zone_counts(settings).itertuples(index=False):
        lines.append(f"  s3://{zone_name:<44} {rows:>9,}")
    reasons = quarantine_reasons(settings)
    lines.append("")
    if reasons:
        lines.append("Rows quarantined, by reason:")
        lines += [f"  {kind:<6} {reason:<50} {n:>7,}" for kind, reason, n in reasons]
    else:
        lines.append("Rows quarantined: none (every record passed validation)")
    late = late_ticks_dropped(settings)
    if late:
        lines.append(f"  ticks dropped as late (behind the watermark, counted): {late:,}")
    if result.warehouse:
        from stockpipe.warehouse.connection import postgres_url

        lines.append("")
        lines.append(
            f"Rows in the warehouse ({postgres_url(settings)}, schema "
            f"{settings.warehouse_schema}; password STOCKPIPE_POSTGRES_PASSWORD in .env):"
        )
        lines += [f"  {table:<44} {rows:>9,}" for table, rows in result.warehouse.items()]
    lines.append("")
    lines.append("Executed notebooks (MinIO -> local copy):")
    for s3, local in result.notebooks.items():
        lines.append(f"  {s3}")
        lines.append(f"      -> {os.path.relpath(local, PROJECT_ROOT)}")
    lines.append("")
    lines.append("Report:")
    lines.append(f"  {result.report_s3 or '(none)'}")
    if result.report_local:
        lines.append(f"      -> {result.report_local}  (open it in a browser)")
    lines.append("")
    console = f"http://{settings.host}:{settings.minio_console_port}"
    lines += [
        "Look around:",
        f"  MinIO console  {console}  user {settings.s3_access_key}, password: "
        "STOCKPIPE_S3_SECRET_KEY in .env",
        f"  JupyterLab     make lab      -> http://{settings.host}:{settings.lab_port}/lab "
        "(the token link is printed at start)",
        f"  Airflow UI     make airflow  -> http://{settings.host}:{settings.airflow_port}  "
        "user admin; the password is printed by the first `make airflow`,",
        f"                 then kept in {password_file(settings)}",
        "",
        "Step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.steps.items()),
        "=" * 72,
    ]
    return lines


# The demo ----------------------------------------------------------------------------------


def run_demo(
    settings: Settings,
    *,
    stream_seconds: float = 150,
    symbols: str = DEMO_SYMBOLS,
    stream_source: str = "synthetic",
    log: Log = print,
) -> DemoResult:
    """Run every step, print progress in plain words, end with the summary."""
    from stockpipe.stack.manager import Stack

    result = DemoResult()
    t_all = time.perf_counter()
    logs_dir = settings.state_dir / "demo"
    logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(logs_dir, 0o700)  # the job logs are the owner's only, as the rest of .state
    REPORTS_DIR.mkdir(exist_ok=True)

    def step(name: str, started: float) -> None:
        result.steps[name] = time.perf_counter() - started

    t = time.perf_counter()
    log("1/5 local stack and Airflow")
    Stack(settings).up(log=lambda m: log(f"    {m}"))
    ensure_db(settings, log=lambda m: log(f"    {m}"))
    log(f"    Kafka {settings.bootstrap_servers}, MinIO {settings.s3_url}")
    step("stack", t)

    live = None
    streaming = [notebook_path(n) for n in ("stream_producer", "spark_streaming")]
    if all(Path(p).exists() for p in streaming):
        log(
            f"2/5 live streaming session in the background: {stream_source} ticks for "
            f"{stream_seconds:.0f} s, the streaming job alongside"
        )
        # the recorded Yahoo session (a replay of it) holds the sample symbols
        stream_symbols = STREAM_SYMBOLS if stream_source == "synthetic" else DEMO_SYMBOLS
        live = LiveSession(
            settings,
            duration_s=stream_seconds,
            logs_dir=logs_dir,
            symbols=stream_symbols,
            source=stream_source,
        )
        live.start(log)
    else:
        log("2/5 live streaming session SKIPPED: the streaming notebooks are not there yet")

    try:
        t = time.perf_counter()
        log(f"3/5 batch pipeline DAG on the sample bars ({symbols}), every date they hold")
        batch = _dag_run(
            settings,
            "stock_batch_pipeline",
            {
                "source": "samples",
                "symbols": symbols,
                "full_history": True,
                "report_dir": str(REPORTS_DIR),
            },
            log,
            logs_dir,
        )
        result.runs.append(batch)
        step("batch", t)

        t = time.perf_counter()
        if live is not None:
            log("    waiting for the live streaming session to end ...")
            live.wait(log)
            result.live_run_id = live.run_id
        step("streaming (after batch)", t)
    except BaseException:
        if live is not None:
            live.stop()
        raise

    t = time.perf_counter()
    log("4/5 charts DAG: the HTML report from bars and tick windows; the warehouse export")
    charts = _dag_run(settings, "stock_charts", {"report_dir": str(REPORTS_DIR)}, log, logs_dir)
    result.runs.append(charts)
    step("charts", t)

    t = time.perf_counter()
    log("    export to the warehouse (what the batch DAG's export left: the tick windows)")
    from stockpipe.warehouse.export import export

    exported = export(settings, log_line=lambda m: log(f"    {m}"))
    result.warehouse = {t: exported.counts[t] for t in sorted(exported.counts)}
    step("export", t)

    log("5/5 summary")
    for run in result.runs:
        if run.run_id:
            result.notebooks.update(_copy_notebooks(settings, run.dag_id, run.run_id))
    if result.live_run_id:
        result.notebooks.update(_copy_notebooks(settings, LiveSession.dag_id, result.live_run_id))
    result.report_s3, result.report_local = _latest_report(settings)
    result.seconds = time.perf_counter() - t_all
    for line in summary(settings, result):
        log(line)
    return result
