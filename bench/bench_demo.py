"""`make demo` warm, and what Airflow + Papermill add to each notebook.

Warm: setup done, an (isolated) stack already up, Airflow's database prepared.
The whole `make demo` is timed; then, per task of the demo's DAG runs:

* task wall time (Airflow's task instance start -> end);
* notebook compute: the sum of the cells' execution times (papermill metadata);
* overhead = wall - compute, split into papermill's part (kernel start, writing
  the executed notebook to MinIO: papermill's duration - compute) and Airflow's
  part (task start-up, templating, XCom, state: the rest).

Target: the demo in <= 10 minutes. Results: bench/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from common import isolated_stack, save

from stockpipe.config import PROJECT_ROOT, Settings
from stockpipe.lake import filesystem
from stockpipe.stack.airflow import ensure_db, last_run


def notebook_times(settings: Settings, dag_id: str, run_id: str) -> dict[str, dict]:
    """task_id -> papermill duration and summed cell time of its executed notebook."""
    fs = filesystem(settings)
    out = {}
    for key in fs.find(f"{settings.bucket}/notebooks/{dag_id}/{run_id}"):
        nb = json.loads(fs.cat(key))
        cells = sum(
            (c.get("metadata", {}).get("papermill", {}).get("duration") or 0) for c in nb["cells"]
        )
        out[key.rsplit("/", 1)[-1].removesuffix(".ipynb")] = {
            "papermill_s": nb["metadata"]["papermill"].get("duration") or 0.0,
            "cells_s": cells,
        }
    return out


def per_task(settings: Settings, dag_id: str) -> list[dict]:
    run_id, _state, tasks = last_run(settings, dag_id)
    nbs = notebook_times(settings, dag_id, run_id) if run_id else {}
    rows = []
    for t in tasks:
        row = {"dag_id": dag_id, "task_id": t.task_id, "state": t.state, "wall_s": t.seconds}
        nb = nbs.get(t.task_id)
        if nb and t.seconds is not None:
            row.update(
                compute_s=nb["cells_s"],
                overhead_s=t.seconds - nb["cells_s"],
                papermill_overhead_s=nb["papermill_s"] - nb["cells_s"],
                airflow_overhead_s=t.seconds - nb["papermill_s"],
            )
        rows.append(row)
    return rows


def live_notebooks(settings: Settings) -> list[dict]:
    """The live session runs outside Airflow: papermill's share only."""
    fs = filesystem(settings)
    runs = sorted(fs.ls(f"{settings.bucket}/notebooks/stock_stream_live", detail=False))
    if not runs:
        return []
    run_id = runs[-1].rsplit("/", 1)[-1]
    return [
        {
            "dag_id": "stock_stream_live (papermill only)",
            "task_id": task,
            "compute_s": t["cells_s"],
            "papermill_overhead_s": t["papermill_s"] - t["cells_s"],
        }
        for task, t in notebook_times(settings, "stock_stream_live", run_id).items()
    ]


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-seconds", type=float, default=150)
    args = parser.parse_args()
    with isolated_stack(bucket="stock-lake") as (settings, _stack):
        ensure_db(settings)  # warm: prepared once, as after a first `make demo`
        env = {
            **os.environ,
            **settings.to_env(),
            "STOCKPIPE_ENV_FILE": str(settings.state_dir / "no.env"),
        }
        cmd = ["make", "--no-print-directory", "demo"]
        if args.stream_seconds != 150:
            cmd = [str(PROJECT_ROOT / ".venv/bin/stockpipe"), "demo"]
            cmd += ["--stream-seconds", str(args.stream_seconds)]
        print(f"running {' '.join(cmd)} (warm) ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
        demo_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:])
            raise SystemExit(f"the demo failed (exit {proc.returncode})")
        rows = per_task(settings, "stock_batch_pipeline") + per_task(settings, "stock_charts")
        rows += live_notebooks(settings)

    print(f"\nmake demo (warm): {demo_s / 60:.1f} min (target <= 10 min)")
    print(f"{'task':<44}{'wall':>8}{'compute':>9}{'overhead':>9}{'papermill':>10}{'airflow':>9}")
    for r in rows:
        name = f"{r['dag_id']}.{r['task_id']}"
        print(
            f"{name:<44}{fmt(r.get('wall_s')):>8}{fmt(r.get('compute_s')):>9}"
            f"{fmt(r.get('overhead_s')):>9}{fmt(r.get('papermill_overhead_s')):>10}"
            f"{fmt(r.get('airflow_overhead_s')):>9}"
        )
    save(
        "demo",
        {
            "demo_seconds": round(demo_s, 1),
            "target_seconds": 600,
            "stream_seconds": args.stream_seconds,
            "tasks": rows,
            "demo_output_tail": proc.stdout.splitlines()[-60:],
        },
    )


if __name__ == "__main__":
    main()
