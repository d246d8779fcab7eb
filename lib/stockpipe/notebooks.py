"""Running the project's notebooks with papermill, executed copies stored in the lake.

Shared by the Airflow notebook tasks (``stockpipe.orchestration``) and by runs
outside Airflow (the demo's live streaming session), so both store executed
notebooks the same way, and neither ever passes a secret as a parameter.

Run one from a shell (parameters as JSON)::

    python -m stockpipe.notebooks stream_producer s3://stock-lake/notebooks/x/y.ipynb \\
        '{"duration_s": 60}'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from stockpipe.config import PROJECT_ROOT, Settings, get_settings
from stockpipe.errors import StockpipeError

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
#: Local folder for HTML reports and local copies of executed notebooks (git-ignored).
REPORTS_DIR = PROJECT_ROOT / "reports"
#: The Jupyter kernel `make setup` installs into the venv.
KERNEL_NAME = "stockpipe"


class SecretParameterError(StockpipeError, ValueError):
    """A notebook parameter carries a secret, which would be stored in the executed notebook."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"notebook parameter {name!r} contains a secret; secrets reach notebooks "
            "through the environment (.env) only, never as parameters"
        )


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


def check_no_secrets(parameters: Mapping[str, Any] | None, settings: Settings) -> None:
    """Raise :class:`SecretParameterError` if a parameter value contains a secret."""
    secrets = secret_values(settings)
    for name, value in (parameters or {}).items():
        if any(s in str(value) for s in secrets):
            raise SecretParameterError(name)


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
