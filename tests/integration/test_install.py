"""A plain (non-editable) install into a clean virtual environment imports and runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stockpipe.config import PROJECT_ROOT

UV = Path(sys.executable).with_name("uv")


def _run(*args: object, cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.skipif(not UV.exists(), reason="uv is not installed (`make setup` installs it)")
def test_pip_install_of_the_checkout_gives_a_package_that_imports_and_runs(tmp_path):
    venv = tmp_path / "venv"
    _run(UV, "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    # the runtime dependencies only (no extras), at the lock's exact pins
    constraints = PROJECT_ROOT / "requirements.txt"
    _run(UV, "pip", "install", "-q", "--python", py, "-c", constraints, PROJECT_ROOT, cwd=tmp_path)

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    code = (
        "import stockpipe, stockpipe.spark.batch, stockpipe.spark.streaming, stockpipe.reader, "
        "stockpipe.warehouse.export, stockpipe.sources.csvfile; print(stockpipe.__file__)"
    )
    where = _run(py, "-c", code, cwd=tmp_path, env=env)
    assert str(venv) in where and "site-packages" in where  # the installed copy, not lib/
    listed = _run(UV, "pip", "list", "--python", py, cwd=tmp_path).lower()
    assert "pyspark" in listed and "pytest" not in listed and "apache-airflow" not in listed

    cli = _run(venv / "bin" / "stockpipe", "--help", cwd=tmp_path, env=env)
    for command in ("batch", "stream", "ticks", "lake", "export", "dag"):
        assert command in cli, command
    settings = _run(
        venv / "bin" / "stockpipe",
        "env",
        cwd=tmp_path,
        env={**env, "STOCKPIPE_TOPIC_BARS": "bars.from.env"},
    )
    assert "STOCKPIPE_TOPIC_BARS=bars.from.env" in settings
