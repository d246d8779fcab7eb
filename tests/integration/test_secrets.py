"""The stack's secrets on a running stack started by `stockpipe up` with the standalone
cluster on: the cluster refuses a Spark driver without its generated RPC secret, and no
secret of the settings is on the command line of any process the stack, a batch job or
a streaming job starts (every command line on the machine, read from /proc while they
run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from stockpipe.config import Settings, load_settings
from stockpipe.ingest import produce_bars
from stockpipe.sources.synthetic import synthetic_bars
from stockpipe.stack.manager import Stack, isolated_settings
from stockpipe.stack.spark_cluster import SparkMaster

pytestmark = pytest.mark.integration


class CommandLines:
    """Every process's command line on this machine, read from /proc again and again by
    a thread (a JVM's launcher, the JVM it execs, executors, Python workers: all)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.seen: dict[tuple[int, bytes], int] = {}  # (pid, command line) -> parent pid
        self.scans = 0
        self._interval = interval_s
        self._last: dict[int, bytes] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._done.is_set():
            for name in os.listdir("/proc"):
                if name.isdigit():
                    self._read(int(name))
            self.scans += 1
            self._done.wait(self._interval)

    def _read(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
            if not raw or self._last.get(pid) == raw:
                return
            with open(f"/proc/{pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            return
        self._last[pid] = raw
        self.seen[(pid, raw)] = ppid

    def commands(self) -> list[tuple[int, int, str]]:
        """(pid, parent pid, command line with spaces between its words) of each seen."""
        return [
            (pid, ppid, raw.replace(b"\0", b" ").decode(errors="replace"))
            for (pid, raw), ppid in self.seen.items()
        ]

    def descendants(self, root: int) -> set[int]:
        """``root`` and every process seen below it."""
        tree, found = {}, {root}
        for (pid, _), ppid in self.seen.items():
            tree.setdefault(ppid, set()).add(pid)
        todo = [root]
        while todo:
            for child in tree.get(todo.pop(), ()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def holding(self, secrets: dict[str, str]) -> list[str]:
        """Each command line seen that holds a secret: its pid, the secrets' names and the
        words around the first (every secret masked)."""
        found = []
        for pid, _, cmd in sorted(self.commands()):
            names = [name for name, value in secrets.items() if value in cmd]
            if names:
                for value in secrets.values():
                    cmd = cmd.replace(value, "****")
                at = cmd.find("****")
                found.append(
                    f"pid {pid}: {', '.join(names)} in ...{cmd[max(0, at - 80) : at + 60]}"
                )
        return found


def _secret_fields(settings: Settings) -> dict[str, str]:
    """Every secret of the settings (each SecretStr field that is set), by field name."""
    return {
        name: value.get_secret_value()
        for name, value in settings
        if isinstance(value, SecretStr) and value.get_secret_value()
    }


@dataclass
class CliStack:
    """A stack `stockpipe up` started, with the environment its children are given."""

    settings: Settings
    env: dict[str, str]
    env_file: Path
    scan: CommandLines
    pids: dict[str, int] = field(default_factory=dict)  # of each service, by name

    def cli(self, *args: str, timeout: float = 600, **env: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "stockpipe.cli", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, (
            f"stockpipe {args[0]}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
        return out.stdout

    def spawn(self, args: list[str], log: Path, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            args,
            env={**self.env, **env},
            stdout=log.open("w"),  # a file: a pipe nobody reads would block the child
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def master(self) -> SparkMaster:
        return next(s for s in Stack(self.settings).services if isinstance(s, SparkMaster))


@pytest.fixture(scope="module")
def cli_stack() -> Iterator[CliStack]:
    """Kafka, MinIO, PostgreSQL, a master and two one-core workers and the Spark Connect
    server (its tasks on them), started by `stockpipe up` with an env file of its own,
    empty: the CLI generates every credential into it. The scan runs from the start."""
    state_dir = Path(tempfile.mkdtemp(prefix="stockpipe-test-secrets-"))
    free = isolated_settings(
        state_dir,
        spark_cluster=True,
        spark_workers=2,
        spark_worker_cores=1,
        spark_worker_memory="1g",
        spark_executor_memory="768m",
        spark_driver_memory="1g",
    )
    # the ports and names of the isolated settings, none of their credentials
    generated = {f"STOCKPIPE_{n.upper()}" for n in _secret_fields(free)}
    generated |= {"STOCKPIPE_S3_ACCESS_KEY"}
    settings_env = {k: v for k, v in free.to_env().items() if k not in generated}
    env_file = state_dir / "stack.env"
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKPIPE_", "AWS_", "_SPARK_"))  # another stack's
    }
    env = {**inherited, **settings_env, "STOCKPIPE_ENV_FILE": str(env_file)}
    with CommandLines() as scan:
        stack = CliStack(free, env, env_file, scan)
        try:
            out = stack.cli("up")
            assert "generated credentials" in out and stat.S_IMODE(env_file.stat().st_mode) == 0o600
            with pytest.MonkeyPatch.context() as mp:  # the settings the children read
                for key in [k for k in os.environ if k.startswith("STOCKPIPE_")]:
                    mp.delenv(key)
                for key, value in settings_env.items():
                    mp.setenv(key, value)
                stack.settings = load_settings(env_file)
            assert stack.settings.spark_master_url.startswith("spark://")
            stack.pids = {svc.name: svc.pid() for svc in Stack(stack.settings).services}
            assert None not in stack.pids.values(), stack.pids
            yield stack
        finally:
            subprocess.run(
                [sys.executable, "-m", "stockpipe.cli", "down"],
                env=env,
                capture_output=True,
                timeout=180,
            )
            shutil.rmtree(state_dir, ignore_errors=True)


#: A driver of its own on the cluster (the streaming job's kind): it counts on executors.
PROBE = """
import sys
from stockpipe.config import get_settings
from stockpipe.spark.session import driver_session
spark = driver_session(get_settings(), sys.argv[1])
print("count", spark.range(1000, numPartitions=2).count(), flush=True)
spark.stop()
"""


def _apps(master: SparkMaster) -> set[str]:
    state = master.state()
    return {a["name"] for a in state.get("activeapps", []) + state.get("completedapps", [])}


def _refused(stack: CliStack, name: str, tmp_path: Path, secret: str) -> str:
    """The output of a probe driver given ``secret`` until it fails to reach the master."""
    log = tmp_path / f"{name}.log"
    probe = stack.spawn(
        [sys.executable, "-c", PROBE, name], log, STOCKPIPE_SPARK_AUTH_SECRET=secret
    )
    try:
        deadline = time.monotonic() + 180
        while "Failed to connect to master" not in log.read_text():
            assert probe.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)
        probe.wait(30)
    return log.read_text()


def test_the_local_cluster_refuses_a_driver_without_its_generated_secret(cli_stack, tmp_path):
    secret = cli_stack.settings.spark_auth_secret.get_secret_value()
    assert len(secret) >= 32  # generated by `stockpipe up` into the env file
    none = _refused(cli_stack, "secrets-probe-none", tmp_path, secret="")
    assert "SASL" in none  # the master asks for authentication; the driver has none
    wrong = _refused(cli_stack, "secrets-probe-wrong", tmp_path, secret="x" * len(secret))
    assert "Mismatched response" in wrong  # the secret is checked, not only its presence
    assert not _apps(cli_stack.master) & {"secrets-probe-none", "secrets-probe-wrong"}

    # the generated secret, from the env file: the application runs on the executors
    ok = tmp_path / "ok.log"
    probe = cli_stack.spawn([sys.executable, "-c", PROBE, "secrets-probe-ok"], ok)
    assert probe.wait(300) == 0, ok.read_text()[-3000:]
    assert "count 1000" in ok.read_text()
    assert "secrets-probe-ok" in _apps(cli_stack.master)


def _wait_for_input_rows(job: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until a micro-batch of the job read rows (its executors ran tasks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, log.read_text()[-3000:]
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("num_input_rows", 0) > 0:
                return
        time.sleep(1)
    raise AssertionError(f"no micro-batch read rows in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def test_no_secret_is_on_the_command_line_of_any_process_of_the_stack_or_a_job(cli_stack, tmp_path):
    s = cli_stack.settings
    # a batch job on the Connect server, whose tasks run on the workers
    bars = synthetic_bars(4, "2024-01-01", "2024-03-31", "1d", seed=3, batch_id="secrets")
    assert produce_bars(s, bars, progress=False).sent == len(bars)
    cli = [sys.executable, "-m", "stockpipe.cli"]
    batch_log = tmp_path / "batch.log"
    batch = cli_stack.spawn([*cli, "batch"], batch_log)
    assert batch.wait(600) == 0, batch_log.read_text()[-3000:]
    assert f"{len(bars)} records read" in batch_log.read_text()

    # a streaming job with a driver of its own on the cluster, stopped once it reads
    cli_stack.cli("ticks", "--max-ticks", "2000", "--rate", "0")
    log = tmp_path / "stream.log"
    opts = ["--name", "t_secrets", "--trigger", "1 second", "--progress", "json"]
    job = cli_stack.spawn([*cli, "stream", "--mode", "continuous", *opts], log)
    try:
        _wait_for_input_rows(job, log)
    finally:
        if job.poll() is None:
            os.kill(job.pid, signal.SIGTERM)  # the job's own clean stop (its JVM is a child)
        try:
            job.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            raise
    assert job.returncode == 0, log.read_text()[-3000:]

    # the scan saw every process of the stack, the jobs and the JVMs they started
    scan = cli_stack.scan
    commands = scan.commands()

    def seen(pids: set[int], marker: str) -> set[int]:
        return {pid for pid, _, cmd in commands if pid in pids and marker in cmd}

    pids = cli_stack.pids
    for name, marker in {
        "kafka": "kafka.Kafka",
        "minio": f"{s.host}:{s.minio_port}",
        "postgres": "postgres",
        "spark-master": "org.apache.spark.deploy.master.Master",
        "spark-worker-1": "org.apache.spark.deploy.worker.Worker",
        "spark-worker-2": "org.apache.spark.deploy.worker.Worker",
        "spark-connect": "SparkConnectServer",
    }.items():
        assert seen({pids[name]}, marker), (name, scan.scans)
    workers = {pids["spark-worker-1"], pids["spark-worker-2"]}
    executors = {
        pid
        for pid, ppid, cmd in commands
        if ppid in workers and "CoarseGrainedExecutorBackend" in cmd
    }
    assert len(executors) >= 2, executors  # the server's, the streaming job's (a probe's)
    assert seen(scan.descendants(job.pid), "pyspark-shell")  # the streaming job's driver
    assert seen({batch.pid}, "stockpipe.cli batch")

    secrets = _secret_fields(s)
    assert {
        "s3_secret_key",
        "s3_root_secret_key",
        "postgres_password",
        "postgres_admin_password",
        "spark_auth_secret",
    } <= set(secrets)
    # and every value of the generated env file (the S3 access key ids too)
    for line in cli_stack.env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and value:
            secrets[key] = value
    assert scan.holding(secrets) == []

    # the Spark daemons' settings files (the RPC secret among them) are their owner's
    # only; no S3 key is in a file
    confs = sorted(s.state_dir.glob("spark-*/spark-*.conf"))
    assert len(confs) == 4, confs  # the master's, the workers', the server's
    for conf in confs:
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600, conf
        assert s.s3_secret_key.get_secret_value() not in conf.read_text(), conf
