"""Running the project's notebooks with papermill, executed copies stored in the lake.

Shared by the Airflow notebook tasks (``stockpipe.orchestration``) and by runs
outside Airflow (the demo's live streaming session), so both store executed
notebooks the same way, and neither ever passes a secret as a parameter.

Run one from a shell (parameters as JSON)::

    python -m stockpipe.notebooks stream_producer s3://stock-lake/notebooks/x/y.ipynb \\
        '{"duration_s": 60}'
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from stockpipe.config import PROJECT_ROOT, Settings, get_settings
from stockpipe.errors import SecretParameterError

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
#: Local folder for HTML reports and local copies of executed notebooks (git-ignored).
REPORTS_DIR = PROJECT_ROOT / "reports"
#: The Jupyter kernel `make setup` installs into the venv.
KERNEL_NAME = "stockpipe"
#: Set to a token of its own for each notebook run: the kernel, its Spark driver and
#: every other process they start inherit it, so the run finds them all to stop them,
#: even one that left the kernel's process group.
RUN_ENV = "STOCKPIPE_NOTEBOOK_RUN"


def notebook_path(notebook: str) -> str:
    return str(NOTEBOOKS_DIR / f"{notebook}.ipynb")


def notebook_url(settings: Settings, dag_id: str, run_id: str, task_id: str) -> str:
    """``s3://<bucket>/notebooks/<dag_id>/<run_id>/<task_id>.ipynb``."""
    return f"s3://{settings.bucket}/notebooks/{dag_id}/{run_id}/{task_id}.ipynb"


class LakeNotebookIO:
    """papermill's ``s3://`` handler, through s3fs with the lake's endpoint and credentials.

    papermill's own S3 handler builds a boto3 session from AWS's defaults and
    takes only an endpoint from ``BOTO3_ENDPOINT_URL``; this one reuses the
    lake's filesystem, so MinIO needs no AWS_* variables.
    """

    def __init__(self, settings: Settings) -> None:
        from stockpipe.lake import filesystem

        self.fs = filesystem(settings)

    def read(self, path: str) -> str:
        return self.fs.cat(path).decode("utf-8")

    def write(self, buf: str, path: str) -> None:
        self.fs.pipe(path, buf.encode("utf-8"))

    def listdir(self, path: str) -> list[str]:
        return [f"s3://{p}" for p in self.fs.ls(path, detail=False)]

    def pretty_path(self, path: str) -> str:
        return path


def register_lake_io(settings: Settings) -> None:
    """Route papermill's ``s3://`` reads and writes to the lake (this process only)."""
    from papermill.iorw import papermill_io

    papermill_io.register("s3://", LakeNotebookIO(settings))


def secret_values(settings: Settings) -> list[str]:
    """The secrets a notebook may use but must never receive as a parameter: every
    secret setting (MinIO key, API key, warehouse passwords and keys)."""
    from pydantic import SecretStr

    values = [v.get_secret_value() for _, v in settings if isinstance(v, SecretStr)]
    return [v for v in values if len(v) >= 8]


#: Notebook -> the ``module:function`` that checks its parameters (given as keywords)
#: before its kernel starts, so that a run with a bad one fails at once, naming it.
PARAMETER_CHECKS: dict[str, str] = {"batch_producer": "stockpipe.ingest:check_parameters"}


def check_parameters(notebook: str, parameters: Mapping[str, Any] | None) -> None:
    """Raise what the notebook's own check (:data:`PARAMETER_CHECKS`) finds wrong."""
    target = PARAMETER_CHECKS.get(notebook)
    if target is None:
        return
    module, _, function = target.partition(":")
    getattr(importlib.import_module(module), function)(**(parameters or {}))


def check_no_secrets(parameters: Mapping[str, Any] | None, settings: Settings) -> None:
    """Raise :class:`SecretParameterError` if a parameter value contains a secret."""
    secrets = secret_values(settings)
    for name, value in (parameters or {}).items():
        if any(s in str(value) for s in secrets):
            raise SecretParameterError(name)


@contextmanager
def marked_run() -> Iterator[str]:
    """Every process started in the block carries a new token in :data:`RUN_ENV`."""
    token = uuid.uuid4().hex
    before = os.environ.get(RUN_ENV)
    os.environ[RUN_ENV] = token
    try:
        yield token
    finally:
        if before is None:
            os.environ.pop(RUN_ENV, None)
        else:
            os.environ[RUN_ENV] = before


def processes_of(token: str) -> list[Any]:
    """The live processes (``psutil.Process``) started in the run marked ``token``."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUN_ENV) == token:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone, another user's, or dead already
    return found


def stop_processes(token: str, grace_s: float = 10.0) -> list[str]:
    """Stop every process of the run marked ``token``; return when none is left.

    SIGTERM first (Spark's driver then stops its jobs), SIGKILL what still runs after
    ``grace_s``. A job killed so keeps its leases until they expire (never released
    while its Spark driver may still commit). Returns what was stopped, for the log.
    """
    import psutil

    procs = processes_of(token)
    stopped = []
    for proc in procs:
        try:
            stopped.append(f"{proc.name()} (pid {proc.pid})")
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return stopped


def run_notebook(
    settings: Settings,
    notebook: str,
    output_url: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    log_output: bool = False,
) -> str:
    """Run a project notebook outside Airflow exactly as a notebook task does."""
    import papermill as pm

    check_no_secrets(parameters, settings)
    register_lake_io(settings)
    pm.execute_notebook(
        notebook_path(notebook),
        output_url,
        parameters=dict(parameters or {}),
        kernel_name=KERNEL_NAME,
        progress_bar=False,
        report_mode=True,  # as the Airflow provider's operator runs them
        log_output=log_output,
    )
    return output_url


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    params = json.loads(args[2]) if len(args) == 3 else {}
    run_notebook(get_settings(), args[0], args[1], params, log_output=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
