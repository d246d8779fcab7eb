"""The import contracts in pyproject.toml hold: the runtime never imports the dev stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

from stockpipe.config import PROJECT_ROOT

PYPROJECT = PROJECT_ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> dict[str, dict]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _within(module: str, packages: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _lint_imports(**env: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` in its own process: it reconfigures logging, which other tests check."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(PYPROJECT), "--no-cache", "--no-logo"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )


def test_the_contracts_are_kept():
    out = _lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_module_is_on_one_side_of_the_boundary():
    """A new module must be named runtime or dev, or the contract would not watch it."""
    contract = _contracts()["runtime-not-dev"]
    runtime, dev = contract["source_modules"], contract["forbidden_modules"]
    # packages holding both sides: their own modules have a contract of their own
    packages = set(_contracts()["package-inits-not-dev"]["source_modules"])
    modules = grimp.build_graph("stockpipe", cache_dir=None).modules
    unplaced = sorted(m for m in modules - packages if not _within(m, runtime + dev))
    assert unplaced == []
    assert not [m for m in runtime + dev if _within(m, runtime) and _within(m, dev)]


def test_a_runtime_import_of_the_stack_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package whose reader imports the stack."""
    copy = tmp_path / "stockpipe"
    shutil.copytree(
        PROJECT_ROOT / "lib" / "stockpipe", copy, ignore=shutil.ignore_patterns("*.pyc")
    )
    with (copy / "reader.py").open("a") as reader:
        reader.write("\n\ndef _setup():\n    from stockpipe.stack import install  # noqa: F401\n")
    out = _lint_imports(PYTHONPATH=str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "stockpipe.reader is not allowed to import stockpipe.stack" in out.stdout
