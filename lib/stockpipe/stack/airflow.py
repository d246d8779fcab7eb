"""Airflow for this checkout: one home under the state directory, shared by every entry point.

`make airflow`, `make demo`, the benchmarks and the tests all get the same
configuration from :func:`airflow_env`: SQLite and logs under
``<state_dir>/airflow``, the repo's ``dags/``, no examples, no catch-up, and every
listening socket on 127.0.0.1.

``airflow standalone`` cannot be used as is for `make airflow`: it always starts
the scheduler's and the triggerer's log servers, which bind every interface.
:func:`run_airflow` starts the same four components itself (API server, scheduler,
DAG processor, triggerer) with the log servers off (with the LocalExecutor the API
server reads task logs from the local log folder) and the API server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockpipe.config import PROJECT_ROOT, Settings, child_environ
from stockpipe.errors import StackError
from stockpipe.pools import POOLS
from stockpipe.stack.manager import generate_secret

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
ADMIN_USER = "admin"


def airflow_home(settings: Settings) -> Path:
    return settings.state_dir / "airflow"


def password_file(settings: Settings) -> Path:
    return airflow_home(settings) / "admin-password.json"


def airflow_bin() -> str:
    """The ``airflow`` script of the running interpreter's environment."""
    return str(Path(sys.executable).with_name("airflow"))


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow's configuration for every Airflow process of this checkout."""
    home = airflow_home(settings)
    api = f"http://{settings.host}:{settings.airflow_port}"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file(settings)),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "NO_COLOR": "1",
    }


def ensure_password(settings: Settings) -> str | None:
    """Generate the admin password once (file mode 0600); the new password, else None.

    The file is the simple auth manager's passwords file, so Airflow uses it and
    never prints it again.
    """
    path = password_file(settings)
    if path.exists():
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = generate_secret(20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({ADMIN_USER: password}) + "\n")
    return password


def _run(settings: Settings, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    env = child_environ(settings, airflow_env(settings))
    return subprocess.run([airflow_bin(), *args], env=env, cwd=PROJECT_ROOT, umask=0o077, **kwargs)


def _has_pool(settings: Settings, name: str) -> bool:
    db = airflow_home(settings) / "airflow.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT 1 FROM slot_pool WHERE pool = ?", (name,)).fetchone() is not None
    finally:
        con.close()


def ensure_db(settings: Settings, log: Callable[[str], None] = print) -> bool:
    """Create or upgrade Airflow's SQLite database (once per Airflow version) and its pool.

    True if anything was done. A fresh state directory starts from a copy of a
    pristine database kept in the download cache (migrating takes a minute);
    without its pools (:data:`POOLS`), the tasks in them would wait forever in a
    scheduler.
    """
    from importlib.metadata import version

    home = airflow_home(settings)
    db = home / "airflow.db"
    airflow_version = version("apache-airflow-core")
    stamp = home / f".db-migrated-{airflow_version}"
    template = settings.cache_dir / f"airflow-{airflow_version}-pristine.db"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not db.exists() and template.exists():
        shutil.copyfile(template, db)
        os.chmod(db, 0o600)
        stamp.touch()
    todo: list[list[str]] = []
    if not (stamp.exists() and db.exists()):
        todo.append(["db", "migrate"])
    for pool, description in POOLS.items():
        if todo or not _has_pool(settings, pool):
            todo.append(["pools", "set", pool, "1", description])
    if not todo:
        return False
    log(f"airflow: preparing its database in {home} (first run only, ~1 min) ...")
    fresh = not db.exists()
    for args in todo:
        proc = _run(settings, args, capture_output=True, text=True)
        if proc.returncode != 0:
            output = proc.stdout[-2000:] + proc.stderr[-2000:]
            raise StackError(f"`airflow {' '.join(args[:2])}` failed:\n{output}")
    stamp.touch()
    if fresh and not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = template.with_suffix(".tmp")
        shutil.copyfile(db, tmp)
        tmp.replace(template)
    return True


# One DAG run in-process: `airflow dags test` ------------------------------------------------


@dataclass
class TaskRun:
    task_id: str
    state: str | None
    start: float | None  # epoch seconds
    end: float | None
    tries: int

    @property
    def seconds(self) -> float | None:
        return self.end - self.start if self.start is not None and self.end is not None else None


@dataclass
class DagTestResult:
    dag_id: str
    run_id: str | None
    state: str | None
    returncode: int
    seconds: float
    log_file: Path
    tasks: list[TaskRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state == "success"

    def failed_tasks(self) -> list[str]:
        return [t.task_id for t in self.tasks if t.state in ("failed", "upstream_failed")]


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    from datetime import UTC, datetime

    ts = datetime.fromisoformat(value)
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def last_run(settings: Settings, dag_id: str) -> tuple[str | None, str | None, list[TaskRun]]:
    """The newest run of ``dag_id`` in the metadata DB: run id, state, task instances."""
    db = airflow_home(settings) / "airflow.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = con.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
        if row is None:
            return None, None, []
        run_id, state = row
        tis = con.execute(
            "SELECT task_id, state, start_date, end_date, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
            (dag_id, run_id),
        ).fetchall()
    finally:
        con.close()
    tasks = [TaskRun(t, s, _epoch(a), _epoch(b), n or 0) for t, s, a, b, n in tis]
    return run_id, state, tasks


def dags_test(
    settings: Settings,
    dag_id: str,
    conf: Mapping[str, Any] | None = None,
    *,
    log_file: Path,
    on_line: Callable[[str], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 1800,
) -> DagTestResult:
    """Run one DAG run in-process (no scheduler) with ``airflow dags test``.

    The full output goes to ``log_file``; ``on_line`` sees each line as it comes.
    """
    ensure_db(settings)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    args = [airflow_bin(), "dags", "test", dag_id]
    if conf:
        args += ["--conf", json.dumps(dict(conf))]
    env = child_environ(settings, {**airflow_env(settings), **(extra_env or {})})
    t0 = time.perf_counter()
    with open(log_file, "w") as out:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=PROJECT_ROOT,
            umask=0o077,  # Airflow's database and logs are private
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            proc.wait()
        finally:
            timer.cancel()
    seconds = time.perf_counter() - t0
    run_id, state, tasks = last_run(settings, dag_id)
    return DagTestResult(dag_id, run_id, state, proc.returncode, seconds, log_file, tasks)


# `make airflow`: the four components, on 127.0.0.1 ----------------------------------------

COMPONENTS: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


def run_airflow(settings: Settings, log: Callable[[str], None] = print) -> int:
    """Run Airflow in the foreground until Ctrl-C; every component's output is prefixed."""
    from stockpipe.stack.services import port_is_free

    if not port_is_free(settings.host, settings.airflow_port):
        raise StackError(
            f"port {settings.airflow_port} on {settings.host} is in use; set "
            "STOCKPIPE_AIRFLOW_PORT in .env to another port"
        )
    password = ensure_password(settings)
    ensure_db(settings, log)
    env = child_environ(settings, airflow_env(settings))
    procs: dict[str, subprocess.Popen] = {}
    lock = threading.Lock()

    def pump(name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with lock:
                log(f"{name:<13} | {line.rstrip()}")

    for name, args in COMPONENTS.items():
        proc = subprocess.Popen(
            [airflow_bin(), *args],
            env=env,
            cwd=PROJECT_ROOT,
            umask=0o077,  # Airflow's database and logs are private
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the components
        )
        procs[name] = proc
        threading.Thread(target=pump, args=(name, proc), daemon=True).start()
    url = f"http://{settings.host}:{settings.airflow_port}"
    banner = [
        f"Airflow UI: {url}  user {ADMIN_USER}",
        f"password: {password}  (generated now; also in {password_file(settings)})"
        if password
        else f"password: in {password_file(settings)}",
        "DAGs are paused when first seen: unpause them in the UI. Ctrl-C stops Airflow.",
    ]
    for line in banner:
        log(f"{'stockpipe':<13} | {line}")
    code = 0

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # stop the components as Ctrl-C does

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        log(f"{'stockpipe':<13} | {', '.join(dead)} stopped; stopping the others")
        code = 1
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return code
