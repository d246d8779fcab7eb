"""A Spark standalone cluster on this machine: one master and N workers.

PySpark's wheel ships ``bin/spark-class`` but not the ``sbin`` start scripts, so
the master and the workers are started as ``spark-class`` processes, like the
other services of the stack (pid, log and work directory under the state
directory, bound to 127.0.0.1). Executors run on this machine, so they load the
connector jars from the same cache paths as the driver, and run the project's
Python. Every RPC between the drivers, the master, the workers and the executors is
authenticated with ``spark_auth_secret``, which the daemons read from a 0600
properties file (never a command line); a worker hands it to its executors in their
environment.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pyspark
import requests

from stockpipe.config import Settings
from stockpipe.errors import StackError
from stockpipe.spark.session import rpc_auth, s3_env
from stockpipe.stack.services import Service, free_port


def spark_home() -> Path:
    """The Spark distribution inside the PySpark wheel (jars and ``bin/spark-class``)."""
    return Path(pyspark.__file__).parent


def _spark_class(settings: Settings, main: str, *args: str) -> tuple[list[str], dict[str, str]]:
    home = spark_home()
    env = {
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": settings.host,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_NO_DAEMONIZE": "1",
        **s3_env(settings),  # executors inherit a worker's environment: S3A reads them
    }
    return [str(home / "bin" / "spark-class"), main, *args], env


def write_daemon_properties(
    path: Path, settings: Settings, conf: dict[str, str] | None = None
) -> None:
    """A master's or worker's settings, its RPC secret among them, its owner's only."""
    from stockpipe.stack.manager import write_private  # the manager imports the services

    lines = {**(conf or {}), **rpc_auth(settings)}
    write_private(path, "".join(f"{k} {v}\n" for k, v in lines.items()))


@dataclass
class SparkMaster(Service):
    """The standalone master; ``url`` is what ``spark_master`` is set to."""

    rpc_port: int = 0
    ui_port: int = 0

    def __post_init__(self) -> None:
        self.rpc_port = self.rpc_port or self.settings.spark_master_port
        self.ui_port = self.ui_port or self.settings.spark_master_ui_port
        self.ports = {
            self.rpc_port: "STOCKPIPE_SPARK_MASTER_PORT",
            self.ui_port: "STOCKPIPE_SPARK_MASTER_UI_PORT",
        }
        self.marker = str(self.properties_file)  # one word of its command line

    @property
    def properties_file(self) -> Path:
        return self.dir / "spark-master.conf"

    def prepare(self) -> None:
        # no REST submission server: nothing listens beyond the two ports above
        write_daemon_properties(
            self.properties_file, self.settings, {"spark.master.rest.enabled": "false"}
        )

    @property
    def url(self) -> str:
        return f"spark://{self.settings.host}:{self.rpc_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        h = self.settings.host
        return _spark_class(
            self.settings,
            "org.apache.spark.deploy.master.Master",
            "--host",
            h,
            "--port",
            str(self.rpc_port),
            "--webui-port",
            str(self.ui_port),
            "--properties-file",
            str(self.properties_file),
        )

    def state(self) -> dict:
        """The master's JSON status (workers, their cores and state)."""
        url = f"http://{self.settings.host}:{self.ui_port}/json/"
        return requests.get(url, timeout=2).json()

    def healthy(self) -> bool:
        try:
            return self.state().get("status") == "ALIVE"
        except (requests.RequestException, ValueError):
            return False


@dataclass
class SparkWorker(Service):
    """One worker registered with ``master``; cores and memory from the settings."""

    master: SparkMaster | None = None
    ui_port: int = 0

    def __post_init__(self) -> None:
        if self.master is None:
            raise StackError("a Spark worker needs its master")
        self.ui_port = self.ui_port or free_port()
        self.ports = {self.ui_port: f"the web UI port of {self.name}"}
        self.marker = str(self.data_dir)

    @property
    def properties_file(self) -> Path:
        return self.dir / "spark-worker.conf"

    def prepare(self) -> None:
        write_daemon_properties(self.properties_file, self.settings)

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        assert self.master is not None
        return _spark_class(
            s,
            "org.apache.spark.deploy.worker.Worker",
            self.master.url,
            "--host",
            s.host,
            "--cores",
            str(s.spark_worker_cores),
            "--memory",
            s.spark_worker_memory,
            "--webui-port",
            str(self.ui_port),
            "--work-dir",
            str(self.data_dir),
            "--properties-file",
            str(self.properties_file),
        )

    def healthy(self) -> bool:
        """Registered with the master and alive there (executors need that, not a UI)."""
        assert self.master is not None
        me = f":{self.ui_port}"
        try:
            workers = self.master.state().get("workers", [])
        except (requests.RequestException, ValueError):
            return False
        return any(
            w.get("state") == "ALIVE" and str(w.get("webuiaddress", "")).endswith(me)
            for w in workers
        )


def spark_cluster_services(settings: Settings, workers: int | None = None) -> list[Service]:
    """A master and ``workers`` workers (default: the ``spark_workers`` setting)."""
    master = SparkMaster("spark-master", settings)
    n = settings.spark_workers if workers is None else workers
    return [
        master,
        *(SparkWorker(f"spark-worker-{i + 1}", settings, master=master) for i in range(n)),
    ]
