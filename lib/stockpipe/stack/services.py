"""The local services (Kafka in KRaft mode, MinIO) as background processes.

Each service owns a data directory, a log file and a pid file under the state
directory. The manager starts only what is not running, waits until each service
answers a real request, and stops only the processes it started.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil
import requests

from stockpipe.config import Settings, child_environ
from stockpipe.errors import PortInUseError, StackError
from stockpipe.stack import install


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


#: Ports free_port has handed out in this process: the kernel may offer one twice, and
#: two services given one port fail at start.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1, never one this process was given before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class Service:
    """A background process the stack manager owns."""

    name: str
    settings: Settings
    ports: dict[int, str] = field(default_factory=dict)  # port -> setting that changes it

    # Filled in by subclasses -----------------------------------------------------------
    marker: str = ""  # a string that appears in this service's command line
    stop_signal: int = signal.SIGTERM
    #: Started once the services before it are healthy: a client of theirs whose start
    #: depends on what they offer then (a Spark Connect server takes the workers' cores)
    after_the_others: ClassVar[bool] = False

    def run_as(self) -> str | None:
        """The user the process runs as (None: the caller's)."""
        return None

    def _identity(self) -> dict[str, object]:
        """Popen's user, group and groups for ``run_as`` (root's groups are dropped)."""
        user = self.run_as()
        if user is None:
            return {}
        import pwd

        entry = pwd.getpwnam(user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    @property
    def dir(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @property
    def main_port(self) -> int:
        return next(iter(self.ports))

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time work before the first start (formatting storage, configs)."""

    def healthy(self) -> bool:
        raise NotImplementedError

    # Process bookkeeping ---------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
            # an empty command line is a process in the middle of its exec (just started,
            # or the JVM launcher re-executing itself): ours, not a stale pid
            alive = proc.status() != psutil.STATUS_ZOMBIE and (
                not cmdline or any(self.marker in part for part in cmdline)
            )
        except psutil.Error:
            alive = False
        if not alive:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self) -> int:
        # A process killed a moment ago may still hold its port while the kernel
        # tears it down: wait a few seconds before calling the port taken.
        deadline = time.monotonic() + 8
        for port, setting in self.ports.items():
            while not port_is_free(self.settings.host, port):
                if time.monotonic() > deadline:
                    raise PortInUseError(self.name, port, setting)
                time.sleep(0.25)
        private_dir(self.settings.state_dir)
        old_umask = os.umask(0o077)  # configs, logs and pid files are the owner's only
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.prepare()
            cmd, env = self.command()
            with self.log_file.open("ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**child_environ(self.settings), **env},
                    start_new_session=True,  # survives the CLI, and Ctrl-C in a notebook
                    umask=0o077,  # and so is what the service writes
                    **self._identity(),
                )
            self.pid_file.write_text(f"{proc.pid}\n")
        finally:
            os.umask(old_umask)
        return proc.pid

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(
                    f"{self.name} exited while starting; last lines of {self.log_file}:\n"
                    + self.log_tail()
                )
            if self.healthy():
                return
            time.sleep(0.25)
        raise StackError(
            f"{self.name} did not become healthy within {timeout:.0f} s; "
            f"last lines of {self.log_file}:\n" + self.log_tail()
        )

    def stop(self, timeout: float = 20.0) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, self.stop_signal)
        try:
            psutil.Process(pid).wait(timeout)
        except psutil.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            psutil.Process(pid).wait(5)
        except psutil.NoSuchProcess:
            pass
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@dataclass
class Kafka(Service):
    """A single-node Kafka broker in KRaft mode (broker and controller in one process)."""

    node_id: int = 1
    voters: str = ""  # controller.quorum.voters for multi-node clusters

    def __post_init__(self) -> None:
        s = self.settings
        self.marker = str(self.dir / "server.properties")
        if not self.ports:
            self.ports = {
                s.kafka_port: "STOCKPIPE_KAFKA_PORT",
                s.kafka_controller_port: "STOCKPIPE_KAFKA_CONTROLLER_PORT",
            }

    @property
    def broker_port(self) -> int:
        return next(iter(self.ports))

    @property
    def controller_port(self) -> int:
        return list(self.ports)[1]

    def properties(self) -> str:
        h = self.settings.host
        rf = self.settings.replication_factor
        quorum = (
            f"controller.quorum.voters={self.voters}"
            if self.voters
            else f"controller.quorum.bootstrap.servers={h}:{self.controller_port}"
        )
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                quorum,
                f"listeners=PLAINTEXT://{h}:{self.broker_port},CONTROLLER://{h}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{h}:{self.broker_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.data_dir}",
                f"num.partitions={self.settings.topic_partitions}",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={min(2, rf) if rf > 1 else 1}",
                f"offsets.topic.replication.factor={rf}",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={min(2, rf)}",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={min(2, rf)}",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.hours=-1",
                "",
            ]
        )

    def prepare(self) -> None:
        (self.dir / "server.properties").write_text(self.properties())
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(level="INFO"))
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if self.voters:
            cluster_id = self.settings.state_dir.name  # shared by every node of one cluster
            cluster_id = base64.urlsafe_b64encode(uuid.uuid5(uuid.NAMESPACE_URL, cluster_id).bytes)
            cluster_id = cluster_id.decode().rstrip("=")
        cmd = [
            install.require_tool("java"),
            *self._jvm_opts(),
            "-cp",
            install.kafka_classpath(self.settings.cache_dir),
            "kafka.tools.StorageTool",
            "format",
            # one word: an id may begin with "-", which would read as an option
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.dir / "server.properties"),
        ]
        if not self.voters:
            cmd.append("--standalone")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{res.stdout}\n{res.stderr}")

    def _jvm_opts(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-Djava.net.preferIPv4Stack=true",
        ]

    def command(self) -> tuple[list[str], dict[str, str]]:
        heap = self.settings.kafka_heap
        cmd = [
            install.require_tool("java"),
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            *self._jvm_opts(),
            "-cp",
            install.kafka_classpath(self.settings.cache_dir),
            "kafka.Kafka",
            str(self.dir / "server.properties"),
        ]
        return cmd, {}

    def healthy(self) -> bool:
        from stockpipe.kafka import cluster_ready

        return cluster_ready(f"{self.settings.host}:{self.broker_port}", timeout_s=2)


@dataclass
class MinIO(Service):
    """A MinIO server built from source, listening on 127.0.0.1 only."""

    def __post_init__(self) -> None:
        s = self.settings
        self.marker = str(install.minio_binary(s.cache_dir))
        if not self.ports:
            self.ports = {
                s.minio_port: "STOCKPIPE_MINIO_PORT",
                s.minio_console_port: "STOCKPIPE_MINIO_CONSOLE_PORT",
            }

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.main_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        if not s.s3_root_access_key or not s.s3_root_secret_key.get_secret_value():
            raise StackError(
                "MinIO's root keys are not set (STOCKPIPE_S3_ROOT_ACCESS_KEY / "
                "STOCKPIPE_S3_ROOT_SECRET_KEY); `stockpipe up` generates them into .env on its "
                "first run."
            )
        console_port = list(self.ports)[1]
        cmd = [
            str(install.minio_binary(s.cache_dir)),
            "server",
            str(self.data_dir),
            "--address",
            f"{s.host}:{self.main_port}",
            "--console-address",
            f"{s.host}:{console_port}",
            "--quiet",
        ]
        env = {
            "MINIO_ROOT_USER": s.s3_root_access_key,
            "MINIO_ROOT_PASSWORD": s.s3_root_secret_key.get_secret_value(),
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            "MINIO_REGION": s.s3_region,
        }
        return cmd, env

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/minio/health/live", timeout=2).status_code == 200
        except requests.RequestException:
            return False


def private_dir(state_dir: Path) -> None:
    """Make the state directory its owner's only (0700).

    As root, PostgreSQL runs as the ``postgres`` user (it refuses root): that group may
    pass through (0710) to its data directory, and through the parents above.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() != 0:
        os.chmod(state_dir, 0o700)
        return
    import grp

    try:
        gid = grp.getgrnam("postgres").gr_gid
    except KeyError:
        os.chmod(state_dir, 0o700)
        return
    os.chown(state_dir, 0, gid)
    os.chmod(state_dir, 0o710)
    for p in state_dir.parents:
        mode = p.stat().st_mode
        if not mode & 0o001:  # e.g. a 0700 temp dir: traverse only, no listing
            os.chmod(p, mode | 0o001)


@dataclass
class PostgreSQL(Service):
    """Debian's PostgreSQL server as the warehouse: its own data directory, TCP on
    127.0.0.1 only (no Unix socket), password (SCRAM) authentication for every user."""

    stop_signal: int = signal.SIGINT  # "fast" shutdown: SIGTERM waits for clients

    def __post_init__(self) -> None:
        s = self.settings
        self.marker = str(self.data_dir)
        if not self.ports:
            self.ports = {s.postgres_port: "STOCKPIPE_POSTGRES_PORT"}

    def run_as(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _bin(self, tool: str) -> str:
        return str(install.postgres_bin_dir() / tool)

    def prepare(self) -> None:
        s = self.settings
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            for p in (self.dir, self.data_dir):
                os.chown(p, user.pw_uid, user.pw_gid)
                os.chmod(p, 0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return
        password = s.postgres_admin_password.get_secret_value()
        if not password:
            raise StackError(
                "the PostgreSQL superuser's password is not set "
                "(STOCKPIPE_POSTGRES_ADMIN_PASSWORD); `stockpipe up` generates it into .env "
                "on its first run."
            )
        pwfile = self.dir / ".initdb-password"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        if os.geteuid() == 0:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            res = subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",  # the superuser; the export's role is made by the stack
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                capture_output=True,
                text=True,
                **self._identity(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise StackError(f"initdb failed:\n{res.stdout}\n{res.stderr}")

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        cmd = [
            self._bin("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.main_port),
            "-c",
            f"listen_addresses={s.host}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "shared_buffers=128MB",
        ]
        return cmd, {}

    def healthy(self) -> bool:
        from stockpipe.stack.postgres_access import server_answers

        return server_answers(self.settings)


ServiceFactory = Callable[[Settings], Service]


def kafka_services(settings: Settings) -> list[Service]:
    """One combined broker+controller, or a ``kafka_nodes`` KRaft cluster.

    Node i (from 0) listens on ``kafka_port + 10 i`` and its controller on
    ``kafka_controller_port + 10 i``; every node is a voter of the quorum.
    """
    n = settings.kafka_nodes
    if n == 1:
        return [Kafka("kafka", settings)]
    h = settings.host
    voters = ",".join(
        f"{i + 1}@{h}:{port}" for i, port in enumerate(settings.kafka_controller_ports)
    )
    return [
        Kafka(
            f"kafka-{i + 1}",
            settings,
            ports={
                broker: f"STOCKPIPE_KAFKA_PORT (+{10 * i})",
                controller: f"STOCKPIPE_KAFKA_CONTROLLER_PORT (+{10 * i})",
            },
            node_id=i + 1,
            voters=voters,
        )
        for i, (broker, controller) in enumerate(
            zip(settings.kafka_broker_ports, settings.kafka_controller_ports, strict=True)
        )
    ]


def local_services(settings: Settings) -> list[Service]:
    services = [
        *kafka_services(settings),
        MinIO("minio", settings),
        PostgreSQL("postgres", settings),
    ]
    if settings.spark_cluster:
        from stockpipe.stack.spark_cluster import spark_cluster_services

        services += spark_cluster_services(settings)
    from stockpipe.stack.spark_connect import SparkConnect

    return [*services, SparkConnect("spark-connect", settings)]
