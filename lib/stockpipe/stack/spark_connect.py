"""The stack's Spark Connect server: one warm Spark for every job and notebook.

A job that starts its own driver spends seconds on a JVM, class loading, code
compilation and Delta log replays before any work; the server has done all that
once, so a job is a thin client (``stockpipe.spark.session.get_spark``). It runs
``SparkConnectServer`` from the pyspark wheel with the jobs' settings
(``spark_conf``: Delta, the connector jars, S3A, tuning) in a 0600 properties
file, tasks on ``spark_master`` (``local[*]``, or the local standalone cluster),
and the lake's keys in its environment only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from stockpipe.config import Settings
from stockpipe.spark.session import s3_env, spark_conf
from stockpipe.spark.tuning import task_slots
from stockpipe.stack.services import Service
from stockpipe.stack.spark_cluster import spark_home

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"

#: A query whose client went away (killed, cut off) is interrupted this long after:
#: well inside a lease's TTL, so a job killed mid-commit never commits after its
#: lease could have passed to another job (docs/architecture.md, "Where Spark runs").
DETACHED_TIMEOUT = "10s"


def server_conf(settings: Settings) -> dict[str, str]:
    """The server's Spark settings: the jobs' own, where its tasks run, its address."""
    cluster = {}
    if settings.spark_master_url.startswith("spark://"):
        # a standalone application takes every free core by default: leave the
        # streaming job's own driver some
        cores = settings.spark_connect_cores or max(1, task_slots(settings) // 2)
        cluster = {"spark.cores.max": str(cores)}
    return {
        **spark_conf(settings),
        **cluster,
        "spark.master": settings.spark_master_url,
        "spark.app.name": "stockpipe Spark Connect server",
        "spark.connect.grpc.binding.address": settings.spark_connect_bind or settings.host,
        "spark.connect.grpc.binding.port": str(settings.spark_connect_port),
        "spark.connect.execute.manager.detachedTimeout": DETACHED_TIMEOUT,
        "spark.connect.execute.manager.maintenanceInterval": "2s",
    }


def write_properties(path: Path, settings: Settings) -> None:
    """The server's settings as a properties file, its owner's only (an RPC secret may
    be among them: a file, never the command line)."""
    from stockpipe.stack.manager import write_private  # the manager imports the services

    write_private(path, "".join(f"{k} {v}\n" for k, v in server_conf(settings).items()))


def server_command(settings: Settings, properties: Path) -> tuple[list[str], dict[str, str]]:
    """The server's command line and the environment it adds (the lake's keys)."""
    home = spark_home()
    cmd = [
        str(home / "bin" / "spark-submit"),
        "--class",
        SERVER_CLASS,
        "--properties-file",
        str(properties),
        "--driver-memory",
        settings.spark_driver_memory,
        "spark-internal",
    ]
    env = {
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": settings.spark_connect_bind or settings.host,
        "PYSPARK_PYTHON": sys.executable,
        **s3_env(settings),
    }
    return cmd, env


def serve(settings: Settings, conf_dir: Path) -> NoReturn:
    """Run the server in this process, in the foreground (a container's command)."""
    conf_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    properties = conf_dir / "spark-connect.conf"
    write_properties(properties, settings)
    cmd, env = server_command(settings, properties)
    os.execve(cmd[0], cmd, {**os.environ, **env})


@dataclass
class SparkConnect(Service):
    """``SparkConnectServer`` as a background process of the stack."""

    #: on a standalone cluster its executors take the cores of the workers registered
    #: when it starts: all of them, not the first to register
    after_the_others = True

    def __post_init__(self) -> None:
        self.ports = {self.settings.spark_connect_port: "STOCKPIPE_SPARK_CONNECT_PORT"}
        self.marker = str(self.properties_file)  # one word of its command line

    @property
    def properties_file(self) -> Path:
        return self.dir / "spark-connect.conf"

    @property
    def url(self) -> str:
        return f"sc://{self.settings.host}:{self.main_port}"

    def prepare(self) -> None:
        write_properties(self.properties_file, self.settings)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return server_command(self.settings, self.properties_file)

    def healthy(self) -> bool:
        """The gRPC endpoint completes an HTTP/2 handshake (it opens once Spark is up)."""
        import grpc

        with grpc.insecure_channel(f"{self.settings.host}:{self.main_port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=2)
            except grpc.FutureTimeoutError:
                return False
        return True
