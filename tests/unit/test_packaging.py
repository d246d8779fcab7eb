"""pyproject.toml, uv.lock and requirements.txt agree: what `make setup` installs is the lock."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from stockpipe import versions
from stockpipe.config import PROJECT_ROOT

#: The environment's uv (`make setup` installs the Makefile's pinned version)
UV = Path(sys.executable).with_name("uv")
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    # --offline: uv.lock and pyproject.toml are all these commands need
    return subprocess.run(
        [str(UV), *args, "--offline"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pins() -> dict[str, str]:
    """requirements.txt as name -> version; the first, where a few transitive packages
    have one per Python version (markers)."""
    pins = {}
    for line in _lines(REQUIREMENTS.read_text()):
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", line
        pins.setdefault(canonicalize_name(req.name), spec.version)
    return pins


def _declared() -> list[Requirement]:
    extras = PYPROJECT["optional-dependencies"].values()
    return [Requirement(r) for r in [*PYPROJECT["dependencies"], *(r for e in extras for r in e)]]


@pytest.fixture(scope="module")
def uv() -> None:
    if not UV.exists():
        pytest.skip("uv is not installed (`make setup` installs it into .venv)")


def test_the_lock_is_up_to_date_with_pyproject(uv):
    out = _uv("lock", "--locked")
    assert out.returncode == 0, f"{out.stderr}\nrun `make lock`"


def test_requirements_txt_is_the_export_of_the_lock(uv):
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    export = re.search(r"^UV_EXPORT := (.+)$", makefile, re.M).group(1).split()
    out = _uv(*export, "-q")
    assert out.returncode == 0, out.stderr
    assert _lines(REQUIREMENTS.read_text()) == _lines(out.stdout), "run `make lock`"


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _pins()
    for req in _declared():
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), req


def test_spark_and_delta_are_pinned_exactly_at_the_jars_versions():
    declared = {canonicalize_name(r.name): str(r.specifier) for r in _declared()}
    assert declared["pyspark"] == f"=={versions.SPARK}"
    assert declared["delta-spark"] == f"=={versions.DELTA}"
    assert _pins()["pyspark"] == versions.SPARK and _pins()["delta-spark"] == versions.DELTA


def test_declared_package_data_exists():
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, patterns in config.get("package-data", {}).items():
        for pattern in patterns:
            assert list((PROJECT_ROOT / "lib" / package).glob(pattern)), pattern


def test_the_project_image_is_built_on_the_locked_airflow():
    """The image keeps its base's Airflow and installs the rest at the lock's pins."""
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    assert f"apache/airflow:{_pins()['apache-airflow']}-python" in dockerfile
    assert "-c requirements.txt" in dockerfile
