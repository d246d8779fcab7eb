"""docker/compose.yaml for real: built here without an image registry (the local build
mode), brought up until every healthcheck passes, the pipeline run through the
deployment itself, then removed with ``down -v``.

The batch DAG is triggered through Airflow's REST API (real scheduler, LocalExecutor)
and its rows are compared with the same DAG run on the local stack; a Kafka broker is
killed while bars are produced; the streaming DAG writes its windows. The build and
start-up times are written to ``.state/deploy/figures.json``.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from stockpipe.config import Settings
from stockpipe.deploy import Deployment, write_docker_env
from stockpipe.schemas import KAFKA_COLUMNS
from stockpipe.stack.engine import build_compose, compose_binary, start_engine
from stockpipe.stack.images import build_local_images, compose_image_env
from stockpipe.stack.services import free_port

#: The checkout's own settings (its engine, its cache), read before the session stack
#: fixture points the environment at a throwaway stack.
PROJECT = Settings()
FIGURES = PROJECT.state_dir / "deploy" / "figures.json"

SYMBOL, START, END = "MSFT", "2017-10-02", "2017-11-11"
BATCH_CONF = {"symbols": SYMBOL, "start": START, "end": END}
#: Columns that say when and from which record a row was ingested, not what it holds.
PROVENANCE = {"ingested_at", "batch_id", "processed_at", *KAFKA_COLUMNS}
LONG_RUNNING = {
    "kafka-1", "kafka-2", "kafka-3", "minio", "spark-master", "spark-worker-1",
    "spark-worker-2", "spark-connect", "postgres", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "jupyter",
}  # fmt: skip
ONE_SHOT = {"project", "lake-init", "airflow-init"}


def _record(**figures: float) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    FIGURES.write_text(json.dumps({**old, **figures}, indent=2) + "\n")


# The same run on the local stack --------------------------------------------------------


@pytest.fixture(scope="module")
def local_bars(settings: Settings, tmp_path_factory) -> pd.DataFrame:
    """The batch DAG's bars on the local stack (run before the deployment starts)."""
    from stockpipe.reader import read_bars
    from stockpipe.stack.airflow import dags_test, ensure_db

    logs = tmp_path_factory.mktemp("local-dag")
    ensure_db(settings, log=lambda _m: None)
    conf = {**BATCH_CONF, "report_dir": str(logs / "reports")}
    result = dags_test(
        settings, "stock_batch_pipeline", conf, log_file=logs / "dag.log", timeout_s=1200
    )
    assert result.ok, result.log_file.read_text()[-4000:]
    return read_bars(settings, SYMBOL, START, END)


# The deployment ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(local_bars, tmp_path_factory) -> Iterator[Deployment]:
    host = start_engine(PROJECT, log=lambda _m: None)
    build_compose(PROJECT.cache_dir)
    times = build_local_images(host, PROJECT.cache_dir, PROJECT.state_dir / "deploy", log=print)
    env_file = tmp_path_factory.mktemp("deploy") / "deploy.env"
    write_docker_env(env_file)
    ports = {
        name: str(free_port())
        for name in ("AIRFLOW_PORT", "JUPYTER_PORT", "MINIO_CONSOLE_PORT", "SPARK_UI_PORT")
    }
    dep = Deployment(
        host,
        compose_binary(PROJECT.cache_dir),
        env_file,
        project=f"stockpipe-test-{uuid.uuid4().hex[:6]}",
        variables={**compose_image_env(), **ports},
    )
    _record(build_s=round(sum(times.values()), 1))
    try:
        _record(up_to_healthy_s=round(dep.up(timeout_s=1500), 1))
        yield dep
    finally:
        dep.down()


def _secrets(dep: Deployment) -> dict[str, str]:
    lines = dep.env_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _python(dep: Deployment, code: str, service: str = "jupyter") -> Any:
    """Run Python in a service's container (its settings are the deployment's); its JSON."""
    res = dep.exec(service, "python", "-c", textwrap.dedent(code), timeout=900)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _stockpipe(dep: Deployment, *args: str) -> str:
    return dep.exec("jupyter", "stockpipe", *args, timeout=1200).stdout


class Airflow:
    """Airflow's REST API on the published loopback port, with a token of the admin user."""

    def __init__(self, dep: Deployment) -> None:
        base = f"http://127.0.0.1:{dep.variables['AIRFLOW_PORT']}"
        password = _secrets(dep)["AIRFLOW_ADMIN_PASSWORD"]
        token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password})
        assert token.status_code in (200, 201), token.text
        self.http = httpx.Client(
            base_url=f"{base}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=60,
        )

    def run_dag(self, dag_id: str, conf: dict, timeout_s: float = 1500) -> dict:
        """Unpause, trigger and wait for one run of ``dag_id``; task_id -> state."""
        deadline = time.monotonic() + 300
        while (
            res := self.http.patch(f"/dags/{dag_id}", json={"is_paused": False})
        ).status_code == 404:
            assert time.monotonic() < deadline, f"{dag_id} was never parsed"
            time.sleep(5)  # the dag processor has not parsed the file yet
        assert res.status_code == 200, res.text
        run = self.http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert run.status_code == 200, run.text
        run_id = run.json()["dag_run_id"]
        deadline = time.monotonic() + timeout_s
        while (state := self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]) in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {state}"
            time.sleep(10)
        tasks = self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()
        return {"run_id": run_id, "state": state} | {
            t["task_id"]: t["state"] for t in tasks["task_instances"]
        }


@pytest.fixture(scope="module")
def airflow(deployment) -> Airflow:
    return Airflow(deployment)


@pytest.fixture(scope="module")
def batch_run(deployment, airflow) -> dict:
    started = time.monotonic()
    run = airflow.run_dag("stock_batch_pipeline", BATCH_CONF)
    _record(batch_dag_s=round(time.monotonic() - started, 1))
    return run


# The tests, in the order they run -------------------------------------------------------


def test_every_service_is_healthy_and_publishes_only_loopback_ports(deployment):
    rows = [
        json.loads(line)
        for line in deployment.run("ps", "--all", "--format", "json").stdout.splitlines()
    ]
    seen = {row["Service"]: row for row in rows}
    assert set(seen) == LONG_RUNNING | ONE_SHOT
    for name in LONG_RUNNING:
        assert (seen[name]["State"], seen[name]["Health"]) == ("running", "healthy"), seen[name]
    for name in ONE_SHOT:
        assert (seen[name]["State"], seen[name]["ExitCode"]) == ("exited", 0), seen[name]
    published = {
        (row["Service"], p["URL"], p["PublishedPort"])
        for row in rows
        for p in row.get("Publishers") or []
        if p.get("PublishedPort")
    }
    assert {(svc, url) for svc, url, _port in published} == {
        (svc, "127.0.0.1") for svc in ("airflow-apiserver", "jupyter", "minio", "spark-master")
    }


def test_the_batch_dag_runs_on_the_cluster_and_equals_the_local_run(
    deployment, batch_run, local_bars
):
    assert batch_run["state"] == "success", batch_run
    assert {k: v for k, v in batch_run.items() if k not in ("run_id", "state")} == {
        "check_stack": "success",
        "batch_producer": "success",
        "wait_for_new_records": "success",
        "spark_batch": "success",
        "export": "success",
        "charts": "success",
    }
    notebooks = _python(
        deployment,
        f"""
        import json
        from stockpipe.config import Settings
        from stockpipe.lake import filesystem
        s = Settings()
        run = "{batch_run["run_id"]}"
        keys = filesystem(s).find(f"{{s.bucket}}/notebooks/stock_batch_pipeline/{{run}}")
        print(json.dumps(sorted(k.rsplit("/", 1)[-1] for k in keys if k.endswith(".ipynb"))))
        """,
    )
    assert notebooks == [
        "batch_producer.ipynb",
        "charts.ipynb",
        "export.ipynb",
        "spark_batch.ipynb",
    ]

    rows = _python(
        deployment,
        f"""
        from stockpipe.config import Settings
        from stockpipe.reader import read_bars
        bars = read_bars(Settings(), "{SYMBOL}", "{START}", "{END}")
        print(bars.to_json(orient="split", date_format="iso", date_unit="ns"))
        """,
    )
    there = pd.DataFrame(rows["data"], columns=rows["columns"])
    here = local_bars.copy()
    compared = [c for c in here.columns if c not in PROVENANCE]
    assert set(there.columns) == set(here.columns)
    assert len(there) == len(here) > 20
    here["ts"] = pd.to_datetime(here["ts"], utc=True)
    there["ts"] = pd.to_datetime(there["ts"], utc=True)
    for col in compared:  # JSON gives None where the frame held NaN
        if here[col].dtype.kind == "f":
            there[col] = pd.to_numeric(there[col])
    key = ["symbol", "interval", "ts"]
    there, here = (df[compared].sort_values(key).reset_index(drop=True) for df in (there, here))
    pd.testing.assert_frame_equal(there, here, check_dtype=False, check_exact=False, rtol=1e-12)


def test_spark_tasks_ran_on_both_workers(deployment, batch_run):
    for worker in ("spark-worker-1", "spark-worker-2"):
        res = deployment.exec(
            worker,
            "sh",
            "-c",
            "cat /opt/spark/work/*/*/stderr | grep -c 'Running task'",
            check=False,
        )
        assert int(res.stdout.strip() or 0) > 0, (
            f"no task ran on {worker}: {res.stdout}{res.stderr}"
        )


def _lake_counts(dep: Deployment, symbols: list[str]) -> dict[str, dict[str, int]]:
    """Rows per symbol in raw (read from each record's JSON), processed and quarantine."""
    return _python(
        dep,
        f"""
        import json
        from stockpipe.config import Settings
        from stockpipe.reader import read_bars, read_quarantine, read_raw_bars
        s = Settings()
        zones = {{
            "raw/bars": [json.loads(v)["symbol"] for v in read_raw_bars(s)["value"]],
            "processed/bars": list(read_bars(s, interval=None)["symbol"]),
            "quarantine/bars": list(q["symbol"]) if len(q := read_quarantine(s)) else [],
        }}
        count = lambda rows: {{sym: rows.count(sym) for sym in {symbols!r}}}
        print(json.dumps({{zone: count(rows) for zone, rows in zones.items()}}))
        """,
    )


#: Bars produced while a broker is killed: 8 symbols x a quarter of 1-minute bars, sent
#: in chunks with a pause between them, so that the kill lands in the middle.
KILL_SYMBOLS = [f"KZ{c}" for c in "ABCDEFGH"]
KILL_START, KILL_END, KILL_INTERVAL = "2024-01-01", "2024-04-01", "1m"
PACED_PRODUCER = f"""
import json, time
from stockpipe.config import Settings
from stockpipe.ingest import produce_bars
from stockpipe.sources.synthetic import synthetic_bars
s = Settings()
bars = synthetic_bars(symbols={KILL_SYMBOLS!r}, start="{KILL_START}", end="{KILL_END}",
                      interval="{KILL_INTERVAL}", batch_id="broker-kill")
sent = failed = 0
for i in range(0, len(bars), 10_000):
    report = produce_bars(s, bars.iloc[i : i + 10_000], progress=False)
    sent, failed = sent + report.sent, failed + report.failed
    time.sleep(1)
print(json.dumps({{"sent": sent, "failed": failed}}))
"""


def _bars_on_topic(dep: Deployment) -> int:
    return _python(
        dep,
        """
        from stockpipe.config import Settings
        from stockpipe.kafka import end_offsets
        s = Settings()
        print(sum(end_offsets(s, s.topic_bars).values()))
        """,
    )


def test_a_kafka_broker_killed_while_producing_loses_and_doubles_no_bar(deployment, batch_run):
    from stockpipe.sources.synthetic import bar_times

    dep = deployment
    per_symbol = len(bar_times(KILL_START, KILL_END, KILL_INTERVAL))
    total = per_symbol * len(KILL_SYMBOLS)
    before = _bars_on_topic(dep)
    cmd, env = dep.command("exec", "-T", "jupyter", "python", "-c", PACED_PRODUCER)
    producer = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _bars_on_topic(dep) - before < 20_000:
            assert producer.poll() is None and time.monotonic() < deadline, "production never began"
        dep.run("kill", "kafka-2")
        at_kill = _bars_on_topic(dep) - before
        assert producer.poll() is None and at_kill < total  # killed in the middle
        time.sleep(5)
        dep.run("start", "kafka-2")  # while the producer goes on
        out, err = producer.communicate(timeout=900)
    finally:
        producer.kill()
    assert producer.returncode == 0, err.decode(errors="replace")[-3000:]
    assert json.loads(out.decode().strip().splitlines()[-1]) == {"sent": total, "failed": 0}
    _stockpipe(dep, "batch")
    counts = _lake_counts(dep, KILL_SYMBOLS)
    assert counts["raw/bars"] == dict.fromkeys(KILL_SYMBOLS, per_symbol)  # every record once
    assert counts["processed/bars"] == dict.fromkeys(KILL_SYMBOLS, per_symbol)  # every bar once
    assert counts["quarantine/bars"] == dict.fromkeys(KILL_SYMBOLS, 0)


def test_the_stream_dag_writes_windows_of_the_produced_ticks(deployment, airflow):
    report = json.loads(
        _stockpipe(
            deployment, "ticks", "--symbols", "ZDA,ZDB", "--rate", "0", "--max-ticks", "2000",
            "--start-ms", str(int(time.time() * 1000) - 600_000), "--step-ms", "100", "--json",
        ).strip().splitlines()[-1]
    )  # fmt: skip
    assert report["sent"] == 2000
    conf = {"window": "20 seconds", "slide": "10 seconds", "watermark": "5 seconds"}
    run = airflow.run_dag("stock_stream_pipeline", conf)
    assert run["state"] == "success", run
    seen = _python(
        deployment,
        """
        import json
        from stockpipe.config import Settings
        from stockpipe.reader import read_raw_ticks, read_tick_windows
        s = Settings()
        raw = [json.loads(v)["symbol"] for v in read_raw_ticks(s)["value"]]
        windows = read_tick_windows(s)
        print(json.dumps({
            "raw": {sym: raw.count(sym) for sym in ("ZDA", "ZDB")},
            "windows": windows.groupby("symbol").size().to_dict(),
        }))
        """,
    )
    assert sum(seen["raw"].values()) == 2000
    assert set(seen["windows"]) == {"ZDA", "ZDB"} and min(seen["windows"].values()) > 5


def test_down_removes_every_container_network_and_volume(deployment):
    deployment.down()
    assert deployment.leftovers() == {"containers": [], "volumes": [], "networks": []}
