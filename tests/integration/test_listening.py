"""Every process the project starts listens on loopback only.

Starts what `stockpipe up`, `make airflow`, `make lab` and a cluster job start (Kafka,
MinIO, PostgreSQL, a Spark master and worker with an application's executor, the
Spark driver, Airflow's four components, JupyterLab with a running kernel) and
lists the listening sockets of all their processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from stockpipe.config import child_environ
from stockpipe.stack.manager import Stack
from stockpipe.stack.services import free_port
from stockpipe.stack.spark_cluster import SparkWorker, spark_cluster_services
from stockpipe.stack.spark_connect import SparkConnect

pytestmark = pytest.mark.integration

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

#: A cluster application that stays up (driver and executor) until its stdin closes.
CLUSTER_APP = """
import sys
from stockpipe.config import get_settings
from stockpipe.spark.session import get_spark
spark = get_spark(get_settings(), "listening-probe")
assert spark.range(1000).selectExpr("sum(id) AS s").first()["s"] == 499500
print("ready", flush=True)
sys.stdin.read()
spark.stop()
"""


def _start(cmd: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, start_new_session=True, **kw)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait(what: str, check, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} did not come up within {timeout:.0f} s")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:  # gone, or a zombie
        return []


def _listening(pids: set[int]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, process name) of every TCP listener and bound UDP socket."""
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids or not conn.laddr:
            continue
        if conn.status == psutil.CONN_LISTEN or conn.type == 2:  # SOCK_DGRAM: bound
            try:
                proc = psutil.Process(conn.pid)
                name = proc.name()
                if name == "java":  # which JVM: its main class
                    args = proc.cmdline()
                    main = [a for a in args if a.startswith("org.apache.")]
                    name = f"java {main[0] if main else ''}".strip()
            except psutil.Error:
                continue
            found.append((conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return found


@pytest.fixture(scope="module")
def everything(stack, spark, tmp_path_factory) -> Iterator[tuple[list[int], dict[str, int]]]:
    """Root pids of everything the project starts, and how many of each kind run."""
    s = stack.settings.model_copy(
        update={
            "spark_cluster": True,
            "spark_master_port": free_port(),
            "spark_master_ui_port": free_port(),
            "spark_workers": 1,
            "spark_worker_cores": 1,
            "spark_worker_memory": "1g",
            "spark_executor_memory": "768m",
            "spark_driver_memory": "768m",
            "airflow_port": free_port(),
            "lab_port": free_port(),
            "spark_connect_port": free_port(),
        }
    )
    # the cluster's own Spark Connect server: the application below is its client
    cluster = Stack(s, [*spark_cluster_services(s), SparkConnect("spark-connect-cluster", s)])
    env = child_environ(s, {"JUPYTER_TOKEN": "listening-test", "PYTHONUNBUFFERED": "1"})
    logs = tmp_path_factory.mktemp("listening")

    def to_log(name: str) -> dict:
        return {"stdout": (logs / f"{name}.log").open("w"), "stderr": subprocess.STDOUT}

    def alive(proc: subprocess.Popen, name: str) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited: " + (logs / f"{name}.log").read_text()[-3000:])
        return True

    procs: list[subprocess.Popen] = []
    try:
        cluster.up(log=lambda _m: None)
        app = _start(
            [sys.executable, "-c", CLUSTER_APP],
            env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(app)
        airflow = _start(
            [
                sys.executable,
                "-c",
                "from stockpipe.config import get_settings\n"
                "from stockpipe.stack.airflow import run_airflow\n"
                "run_airflow(get_settings(), log=lambda _m: None)",
            ],
            env,
            **to_log("airflow"),
        )
        procs.append(airflow)
        lab = _start(
            [
                sys.executable,
                "-c",
                "from stockpipe.config import get_settings\n"
                "from stockpipe.stack.lab import run_lab\n"
                "run_lab(get_settings())",
            ],
            env,
            **to_log("lab"),
        )
        procs.append(lab)

        assert app.stdout.readline().strip() == "ready"
        lab_url = f"http://{s.host}:{s.lab_port}"
        _wait("JupyterLab", lambda: alive(lab, "lab") and requests.get(f"{lab_url}/api").ok)
        kernel = requests.post(
            f"{lab_url}/api/kernels",
            json={"name": "stockpipe"},
            headers={"Authorization": "token listening-test"},
            timeout=60,
        )
        assert kernel.status_code == 201, kernel.text
        api = f"http://{s.host}:{s.airflow_port}/api/v2/monitor/health"
        _wait("Airflow's API server", lambda: alive(airflow, "airflow") and requests.get(api).ok)
        _wait("Airflow's four components", lambda: len(_tree(airflow.pid)) >= 5)
        alive(airflow, "airflow")
        time.sleep(15)  # the scheduler and triggerer open what they open at start
        pids = [svc.pid() for svc in [*stack.services, *cluster.services]]
        assert None not in pids
        counts = {"executors": 0}
        worker = next(svc for svc in cluster.services if isinstance(svc, SparkWorker))
        for proc in _tree(worker.pid()):
            with contextlib.suppress(psutil.Error):  # a short-lived helper that has exited
                counts["executors"] += "CoarseGrainedExecutorBackend" in " ".join(proc.cmdline())
        counts["airflow_port"], counts["lab_port"] = s.airflow_port, s.lab_port
        counts["master_ui_port"] = s.spark_master_ui_port
        yield [*pids, os.getpid(), app.pid, airflow.pid, lab.pid], counts
    finally:
        for proc in reversed(procs):
            if proc.stdin:
                proc.stdin.close()
            _stop(proc)
        cluster.down(log=lambda _m: None)


def test_every_process_listens_on_loopback_only(everything):
    roots, counts = everything
    assert counts["executors"] == 1  # the cluster's Connect server has its executor
    pids = {p.pid for root in roots for p in _tree(root)}
    sockets = _listening(pids)
    names = {name for _ip, _port, _pid, name in sockets}
    # every kind of process opened a socket: JVMs (Kafka, Spark), MinIO, PostgreSQL, Python
    assert {"java", "minio", "postgres"} <= {n.split()[0] for n in names}, names
    ports = {port for _ip, port, _pid, _name in sockets}
    assert {counts["airflow_port"], counts["lab_port"], counts["master_ui_port"]} <= ports
    assert len(sockets) >= 15, sockets
    exposed = [
        f"{name} (pid {pid}) on {ip}:{port}"
        for ip, port, pid, name in sockets
        if ip not in LOOPBACK
    ]
    assert exposed == []
